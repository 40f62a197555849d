"""The whole job of this checkout against another revision's, alternating, in one run.

    git worktree add /tmp/before HEAD~1
    python -m benchmarks.preprocess_ab --before /tmp/before --num_images 2000 --rounds 3

Each round runs ``python -m pipelines.preprocess`` (the README's command: DirectRunner
defaults, statistics on, 128x128 JPEG records) of each revision, in a fresh process whose
``PYTHONPATH`` and working directory are that revision, on a quarter of the images and on all of
them, each into a fresh output folder. The difference of the two walls gives the steady-state
throughput (images/s), what is left of the small run the fixed cost. Rounds alternate the
revisions, so this machine's slow minutes hit both alike. Prints each round, then per revision
the best steady state and fixed cost, and the after/before ratio of the steady state round by
round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ensure_dataset, steady_state, subset_dir


def run_job(tree: str, directory: str, output: str, extra: list[str]) -> float:
    """The job of the revision in ``tree`` on ``directory``'s images/ and masks/; its wall."""
    command = [sys.executable, "-m", "pipelines.preprocess",
               "--images", f"{directory}/images/*.jpg", "--masks", f"{directory}/masks/*.png",
               "--output", output, "--image_size", "128", *extra]
    os.sync()  # nothing of earlier runs left to write back to disk
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="a checkout of the revision to compare with")
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="/tmp/beam_etl_bench/data")
    parser.add_argument("--work", default="/tmp/beam_etl_bench/work")
    parser.add_argument("--extra", default="", help="more job flags, e.g. '--no_statistics'")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.before, "beam_etl")):
        parser.error(f"--before: no beam_etl/ in {args.before!r}")
    records = ensure_dataset(args.data, args.num_images)
    os.makedirs(args.work, exist_ok=True)
    sizes = {"small": args.num_images // 4, "large": args.num_images}
    inputs = {name: subset_dir(records[:n], tempfile.mkdtemp(dir=args.work)) for name, n in sizes.items()}
    trees = {"before": os.path.abspath(args.before),
             "after": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    runs = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            walls = {}
            for size, directory in inputs.items():
                output = tempfile.mkdtemp(dir=args.work)
                shutil.rmtree(output)  # the job makes it
                walls[size] = run_job(tree, directory, output, args.extra.split())
                shutil.rmtree(output, ignore_errors=True)
            rate, fixed = steady_state(sizes["small"], walls["small"], sizes["large"], walls["large"])
            runs[name].append({**walls, "steady_images_per_s": rate, "fixed_s": fixed})
        print(f"round {round_ + 1}: " + ", ".join(
            f"{name} {r[-1]['small']:.1f} s / {r[-1]['large']:.1f} s, steady {r[-1]['steady_images_per_s']:.0f} images/s"
            for name, r in runs.items()), flush=True)
    for name, figures in runs.items():
        print(f"{name:6s} steady state best {max(f['steady_images_per_s'] for f in figures):6.0f} images/s, "
              f"large run best {min(f['large'] for f in figures):5.1f} s, "
              f"fixed cost best {min(f['fixed_s'] for f in figures):5.1f} s")
    ratios = [a["steady_images_per_s"] / b["steady_images_per_s"] for a, b in zip(runs["after"], runs["before"])]
    walls = [a["large"] / b["large"] for a, b in zip(runs["after"], runs["before"])]
    print("steady state after/before per round: " + " ".join(f"{r:.3f}" for r in ratios))
    print("large-run wall after/before per round: " + " ".join(f"{r:.3f}" for r in walls))
    return {"runs": runs, "steady_after_over_before": ratios, "wall_after_over_before": walls}


if __name__ == "__main__":
    main()
