"""The raw loader of this checkout against another revision's, alternating, in one run.

    git worktree add /tmp/before HEAD~1
    python -m benchmarks.loader_ab --before /tmp/before --num_images 8000 --rounds 5

On the raw-format shards of ``benchmarks.loader_throughput`` (made by this checkout if
missing), each round times, in a fresh process whose ``PYTHONPATH`` puts that revision first,
each revision's ``loader.make_dataset(..., repeat=True, normalize_on_device=True)`` and
its own ceiling (``loader_throughput.records_only_dataset``: the shards read as that
revision's loader reads them, no parsing). Rounds alternate the revisions, so this machine's
slow minutes hit both alike. Prints each round, then per revision the range and the best,
and the after/before ratio of the loader round by round.
"""

from __future__ import annotations

import json
import os
import sys


def _one(argv) -> None:
    """One revision's figures, in the process that ``run_with`` starts: JSON on the last line."""
    # pylint: disable=import-outside-toplevel  # from the revision on PYTHONPATH
    from benchmarks.loader_throughput import images_per_second, records_only_dataset
    try:
        from beam_etl import loader
    except ImportError:  # a revision from before the loader had its own package
        from beam_etl import train_loader as loader

    output, batch_size, batches = argv[0], int(argv[1]), int(argv[2])
    dataset = loader.make_dataset(output, "train", batch_size, repeat=True, normalize_on_device=True)
    figures = {"loader": images_per_second(dataset, batches, warmup=20),
               "records_only": images_per_second(records_only_dataset(output, batch_size), batches, warmup=20)}
    print(json.dumps(figures))


def run_with(tree: str, output: str, batch_size: int, batches: int) -> dict:
    from benchmarks.common import run_in  # pylint: disable=import-outside-toplevel  # see run_in

    return run_in(tree, __file__, "--one", output, str(batch_size), str(batches))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        _one(argv[1:])
        return {}
    # pylint: disable=import-outside-toplevel  # not at the top: ``_one`` runs against older trees
    from benchmarks.common import build_parser, ensure_dataset, ensure_shards

    parser = build_parser(__doc__)
    parser.add_argument("--before", required=True, help="a checkout of the revision to compare with")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.before, "beam_etl")):
        parser.error(f"--before: no beam_etl/ in {args.before!r}")
    output = ensure_shards(ensure_dataset(args.data, args.num_images), args.image_size, "raw", args.work)
    trees = {"before": os.path.abspath(args.before), "after": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    runs = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(run_with(tree, output, args.batch_size, args.batches))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{name} loader {r[-1]['loader']:,.0f} records_only {r[-1]['records_only']:,.0f}" for name, r in runs.items()),
            flush=True)
    summary = {}
    for name, figures in runs.items():
        summary[name] = {key: {"min": min(f[key] for f in figures), "max": max(f[key] for f in figures)}
                         for key in ("loader", "records_only")}
        print(f"{name:6s} loader {summary[name]['loader']['min']:8,.0f} - {summary[name]['loader']['max']:8,.0f}"
              f"   records_only {summary[name]['records_only']['min']:8,.0f} - {summary[name]['records_only']['max']:8,.0f}"
              f"   loader of its own records_only per round: "
              + " ".join(f"{f['loader'] / f['records_only']:.2f}" for f in figures))
    speedups = [a["loader"] / b["loader"] for a, b in zip(runs["after"], runs["before"])]
    print("loader after/before per round: " + " ".join(f"{s:.2f}" for s in speedups))
    summary["loader_after_over_before"] = speedups
    return summary


if __name__ == "__main__":
    main()
