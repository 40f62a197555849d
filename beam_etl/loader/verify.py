"""Checks every file of an output against its manifest, and that it holds no file of the job's the
manifest does not list; prints a verdict (exit status 0: intact, 1: a file does not match, 2: no
output there).

Its flags are parsed where nothing loads TensorFlow, so that a wrong one is refused at once; the
checks (:mod:`beam_etl.loader.verification`), which read through TensorFlow's file systems, load
after.

    python -m beam_etl.loader.verify OUT        # prints a verdict; exit status 0 if the output is intact
"""

from __future__ import annotations

import sys

from beam_etl.config import FlagParser, flag_type, output_folder


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.loader.verify") -> int:
    parser = FlagParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("output", metavar="OUT", type=flag_type(output_folder),
                        help="Output folder of the job (local or gs://).")
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's native logs.")
    args = parser.parse_args(argv)
    # TensorFlow takes seconds to load: only now that every flag is right (a wrong one fails at once)
    from beam_etl.loader.verification import verify  # pylint: disable=import-outside-toplevel
    try:
        problems = verify(args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if problems:
        for name, problem in problems.items():
            print(f"FAIL {args.output.rstrip('/')}/{name}: {problem}")
        print(f"{args.output}: {len(problems)} file(s) do not match the manifest")
        return 1
    print(f"{args.output}: every file matches the manifest")
    return 0


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    sys.exit(main())
