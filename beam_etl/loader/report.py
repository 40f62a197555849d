"""One self-contained HTML page to look at an output (beam-etl report OUT).

Counts per split, rejected inputs by reason, the statistics as plots, what changed, a grid of
examples: :mod:`beam_etl.loader.report_page` makes the page. It is written where ``--html``
says, never into the output, whose manifest lists exactly its files.

Its flags are parsed and checked here, where nothing loads TensorFlow, so that a wrong one is
refused at once; the page's module, which reads the output through TensorFlow, loads after.

    python -m beam_etl.loader.report OUT [--html report.html] [--examples 8] [--rejected_per_reason 3]
"""

from __future__ import annotations

import sys

from beam_etl.config import FlagParser, flag_type, output_folder, positive_int
from beam_etl.loader import written_file


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.loader.report") -> int:
    parser = FlagParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("output", metavar="OUT", type=flag_type(output_folder),
                        help="Output folder of the job (local or gs://).")
    parser.add_argument("--html", default="beam-etl-report.html", metavar="PATH",
                        help="Where to write the page (never inside OUT). Default beam-etl-report.html.")
    parser.add_argument("--examples", type=flag_type(positive_int), default=8, help="Examples in the grid. Default 8.")
    parser.add_argument("--rejected_per_reason", type=flag_type(positive_int), default=3,
                        help="Rejected inputs shown per reason. Default 3.")
    parser.add_argument("--seed", type=flag_type(int), default=0, help="Which examples the grid shows.")
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's native logs.")
    args = parser.parse_args(argv)
    refused = written_file.refusal("--html", args.html, args.output)
    if refused is not None:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    # TensorFlow takes seconds to load: only now that every flag is right (a wrong one fails at once)
    from beam_etl.loader import report_page  # pylint: disable=import-outside-toplevel
    return report_page.write_report(args.output, args.html, args.examples, args.rejected_per_reason, args.seed)


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    sys.exit(main())
