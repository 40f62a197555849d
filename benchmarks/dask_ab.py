"""The job on Dask with this checkout's code against another revision's, alternating, in one run.

    git worktree add /tmp/before HEAD~1
    python -m benchmarks.dask_ab --before /tmp/before --sizes 4000,16000 --repeats 3

For each round, size, revision and worker count (1 and 2), one run of the whole job as
``benchmarks.dask_scaling`` runs it (a fresh LocalCluster per run), in a fresh process whose
``PYTHONPATH`` puts that revision's ``beam_etl`` first, so the client and the workers run the
same code. Rounds alternate the revisions, so this machine's slow hours hit both alike.
Prints each run, then per revision the steady images/s (from the difference between the
sizes, best of the rounds and per round), the speed-up from 1 to 2 workers, and the largest
peak memory per worker at each size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one(argv) -> None:
    """One run, in the process that ``run_with`` starts: prints its wall and peaks as JSON."""
    from benchmarks.dask_scaling import run_on_dask  # pylint: disable=import-outside-toplevel

    inputs, output, workers = argv
    seconds, peaks = run_on_dask(inputs, output, int(workers))
    print(json.dumps({"seconds": seconds, "peaks": peaks}))


def run_with(tree: str, inputs: str, output: str, workers: int) -> dict:
    from benchmarks.common import run_in  # pylint: disable=import-outside-toplevel  # see run_in

    return run_in(tree, __file__, "--one", inputs, output, str(workers))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--one"]:
        _one(argv[1:])
        return {}
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a checkout of the revision to compare with")
    parser.add_argument("--sizes", default="4000,16000", help="two image counts for steady state")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.before, "beam_etl")):
        parser.error(f"--before: no beam_etl/ in {args.before!r}")
    # not at the top: ``_one`` runs this file against older trees, which may lack the module
    from benchmarks.common import ensure_dataset, steady_state, subset_dir  # pylint: disable=import-outside-toplevel
    small, large = (int(n) for n in args.sizes.split(","))
    records = ensure_dataset(args.data, large)
    work = tempfile.mkdtemp(prefix="beam-etl-dask-ab-")
    inputs = {n: subset_dir(records[:n], os.path.join(work, f"inputs-{n}")) for n in (small, large)}
    trees = {"before": os.path.abspath(args.before), "after": HERE}

    runs = {}  # (revision, workers, size) -> [run]
    for round_ in range(args.repeats):
        for size in (small, large):
            for revision, tree in trees.items():
                for workers in (1, 2):
                    run = run_with(tree, inputs[size], os.path.join(work, f"out-{revision}"), workers)
                    runs.setdefault((revision, workers, size), []).append(run)
                    print(f"round {round_ + 1} {size} images {revision} {workers} worker(s): "
                          f"{run['seconds']:.1f} s, peak {max(run['peaks']):.0f} MB", flush=True)

    result = {}
    for revision in trees:
        rates = {}
        for workers in (1, 2):
            walls = {size: [run["seconds"] for run in runs[(revision, workers, size)]] for size in (small, large)}
            rates[workers] = {
                "best": steady_state(small, min(walls[small]), large, min(walls[large]))[0],
                "per_round": [steady_state(small, a, large, b)[0] for a, b in zip(walls[small], walls[large])],
            }
        result[revision] = {
            "steady_images_per_s": rates,
            "speedup_best": rates[2]["best"] / rates[1]["best"],
            "speedup_per_round": [b / a for a, b in zip(rates[1]["per_round"], rates[2]["per_round"])],
            "peak_mb": {f"{workers}_workers_{size}": max(max(run["peaks"]) for run in runs[(revision, workers, size)])
                        for workers in (1, 2) for size in (small, large)},
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
