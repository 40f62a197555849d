"""``beam-etl``: one command for the job and its tools.

    beam-etl preprocess --oxford_pets DATA --output OUT --image_size 128
    beam-etl load --data OUT --split train --batch_size 64 --steps 200
    beam-etl verify OUT
    beam-etl diff OLD NEW
    beam-etl prune-cache OUT
    beam-etl report OUT --html report.html
    beam-etl sample-data --output DATA --num_images 200 --seed 0

Each is the module users may also run with ``python -m`` (named in ``--help``), imported only
when its command runs: ``beam-etl load`` and ``beam-etl verify`` load TensorFlow, not Beam, and
only once their flags are parsed (a wrong flag is refused at once).
"""

from __future__ import annotations

import importlib
import sys

from beam_etl import native_logs, quick_exit, unread_streams

# command -> (module, function taking (argv, prog=...), what it does)
COMMANDS = {
    "preprocess": ("pipelines.preprocess", "main",
                   "run the job: images and masks -> shards, manifest.json, rejected list"),
    "load": ("beam_etl.loader.cli", "main",
             "the tf.data loader on an output: images/s, a preview grid, a short training run"),
    "verify": ("beam_etl.loader.verify", "main",
               "check every file of an output against its manifest (exit 0: intact)"),
    "diff": ("beam_etl.diff", "main",
             "what changed between two outputs: inputs added, removed, changed (exit 1 if any)"),
    "prune-cache": ("beam_etl.beam.prune_cache", "main",
                    "cut the cache of outcomes down to what the outputs named use"),
    "report": ("beam_etl.loader.report", "main",
               "one HTML page to look at an output: counts, rejects, statistics, examples"),
    "sample-data": ("beam_etl.tools.sample_data", "main",
                    "write a synthetic Oxford-IIIT-Pet-style dataset (with --defects, bad inputs too)"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: beam-etl COMMAND [--help | FLAGS]", "", "commands:"]
    lines += [f"  {name:{width}s}  {text} (python -m {module})" for name, (module, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    unread_streams.ignore_gone_readers()  # (`beam-etl report OUT | head`)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"beam-etl: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    if not native_logs.wants_verbose(rest):
        native_logs.filter_native_logs()  # before the command's module loads TensorFlow
    result = getattr(importlib.import_module(module), function)(rest, prog=f"beam-etl {name}")
    return result if isinstance(result, int) else 0


def entry_point() -> None:
    """The ``beam-etl`` script: :func:`main`, then the process ends without the interpreter's
    teardown (:mod:`beam_etl.quick_exit`)."""
    quick_exit.exit_now(main())


if __name__ == "__main__":
    entry_point()
