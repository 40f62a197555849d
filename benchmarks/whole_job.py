"""The whole job against a hand-written pool, start to finish, on this machine's cores.

    python -m benchmarks.whole_job --sizes 50,7390 --rounds 2
    python -m benchmarks.whole_job --sizes 50,7390 --rounds 2 --dask    # adds a 2-worker Dask cluster

Every command is a fresh process timed from its start to its exit, start-up included, on
photo-like 500x375 JPEG + PNG pairs (``beam_etl.tools.sample_data``) to 128x128 JPEG records:

- ``pool``: a hand-written 2-process ``multiprocessing.Pool`` running the job's per-image chain
  (:func:`beam_etl.image.chain.process_example`) and writing the records to one file;
- ``readme``: the README's command, ``beam-etl preprocess --images ... --masks ... --output
  OUT --image_size 128`` (no runner flags, statistics on), and ``readme --no_statistics``;
- ``readme (first run on this machine)``: the same with an empty cache, so that tf.Transform
  writes the transform graph's template (``beam_etl.beam.transform_template``) in the run;
- ``2 workers``: the same with ``--direct_running_mode multi_processing --direct_num_workers 2``;
- with ``--dask``: the same with ``--dask_local_workers 2``.

Rounds alternate every command on every size, so this machine's slow minutes hit all alike;
each figure is the best of the rounds. Prints the table, each command's wall over the pool's at
the largest size, and what statistics cost against ``--no_statistics``. ``--before TREE`` also
runs every job command from another checkout, in the same rounds (``before: NAME``), so a
change is measured side by side with the code it replaces.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ensure_dataset, subset_dir

WORKERS = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
FIRST_RUN = "readme (first run on this machine)"  # an empty cache: tf.Transform writes the graph's template
COMMANDS = {
    "readme": [],
    FIRST_RUN: [],
    "readme --no_statistics": ["--no_statistics"],
    "2 workers": WORKERS,
    "2 workers --no_statistics": [*WORKERS, "--no_statistics"],
}
DASK_COMMANDS = {
    "dask 2 workers": ["--dask_local_workers", "2"],
    "dask 2 workers --no_statistics": ["--dask_local_workers", "2", "--no_statistics"],
}
TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class _PoolInputs:
    """The pool's stand-in for a source's settings: JobConfig wants one, the pool reads none."""

    def splits(self, config):
        del config
        return ()


def pool_main(directory: str, output: str, workers: int) -> None:
    """The hand-written pool, as its own process: pair by stem, run the chain, write the records."""
    from beam_etl.config import JobConfig  # pylint: disable=import-outside-toplevel
    from beam_etl.elements import SourceRecord  # pylint: disable=import-outside-toplevel
    from benchmarks.common import run_pool  # pylint: disable=import-outside-toplevel

    records = []
    for image in sorted(glob.glob(os.path.join(directory, "images", "*.jpg"))):
        stem = os.path.splitext(os.path.basename(image))[0]
        records.append(SourceRecord(key=stem, image_uri=image,
                                    mask_uri=os.path.join(directory, "masks", stem + ".png")))
    os.makedirs(output)
    config = JobConfig(output=output, sources=(_PoolInputs(),), image_size=(128, 128), statistics=False)
    run_pool(records, config, workers, output)


def statistics_share_cost(records, rounds: int = 5) -> dict[str, float]:
    """ms per image of the per-image chain with and without each example's statistics share,
    in this process, alternating, best of ``rounds``: what statistics add to the per-image work,
    which the walls above cannot resolve on a noisy machine."""
    from beam_etl.config import JobConfig  # pylint: disable=import-outside-toplevel
    from beam_etl.image import chain  # pylint: disable=import-outside-toplevel

    data = []
    for record in records:
        with open(record.image_uri, "rb") as image, open(record.mask_uri, "rb") as mask:
            data.append((record, image.read(), mask.read()))
    best = {}
    for _ in range(rounds):
        for statistics in (False, True):
            config = JobConfig(output="unused", sources=(_PoolInputs(),), image_size=(128, 128), statistics=statistics)
            settings = config.chain_settings()
            started = time.perf_counter()
            for record, image, mask in data:
                chain.process_example(record, image, mask, "train", settings)
            ms = (time.perf_counter() - started) * 1000 / len(data)
            best[statistics] = min(best.get(statistics, ms), ms)
    return {"without_ms": best[False], "with_ms": best[True], "share_cost": best[True] / best[False] - 1}


def _timed(command: list[str], cwd: str, environ: dict | None = None) -> float:
    os.sync()  # nothing of earlier runs left to write back to disk
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": cwd, **(environ or {})})
    seconds = time.perf_counter() - started
    if completed.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return seconds


def run(name: str, flags: list[str], directory: str, work: str, job_tree: str) -> float:
    output = tempfile.mkdtemp(dir=work)
    shutil.rmtree(output)  # each command makes it
    cache = None
    try:
        if name == "pool":
            return _timed([sys.executable, "-m", "benchmarks.whole_job", "--pool_child", directory, output], TREE)
        first_run = name.removeprefix("before: ") == FIRST_RUN
        cache = tempfile.mkdtemp(dir=work) if first_run else None
        return _timed([sys.executable, "-m", "pipelines.preprocess", "--images", f"{directory}/images/*.jpg",
                       "--masks", f"{directory}/masks/*.png", "--output", output, "--image_size", "128",
                       *flags], job_tree, {"BEAM_ETL_CACHE_DIR": cache} if cache else None)
    finally:
        shutil.rmtree(output, ignore_errors=True)
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def table(best: dict, sizes: list[int], names: list[str]) -> str:
    largest = max(sizes)
    pool = best[("pool", largest)]
    lines = ["| command | " + " | ".join(f"{n:,} pairs" for n in sizes) + f" | x pool at {largest:,} |",
             "|---|" + "---|" * len(sizes) + "---|"]
    for name in names:
        walls = " | ".join(f"{best[(name, n)]:.1f} s" for n in sizes)
        lines.append(f"| {name} | {walls} | {best[(name, largest)] / pool:.2f} |")
    return "\n".join(lines)


def statistics_costs(best: dict, sizes: list[int], names: list[str]) -> list[str]:
    lines = []
    for name in names:
        if name.endswith("--no_statistics") or name in ("pool", FIRST_RUN):
            continue
        without = f"{name} --no_statistics"
        if without in names:
            for n in sizes:
                lines.append(f"statistics cost, {name}, {n:,} pairs: "
                             f"{best[(name, n)] / best[(without, n)] - 1:+.1%} of the wall")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="50,7390", help="comma-separated numbers of pairs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dask", action="store_true", help="add the commands on a 2-worker Dask cluster")
    parser.add_argument("--only", default="", help="comma-separated command names to run (and the pool)")
    parser.add_argument("--before", default=None, help="also run the job commands from this checkout")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-whole-job"))
    parser.add_argument("--share_images", type=int, default=300,
                        help="images for timing the statistics share in the chain (0: skip)")
    parser.add_argument("--pool_child", nargs=2, metavar=("DIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pool_child:
        pool_main(*args.pool_child, workers=2)
        return {}
    sizes = sorted(int(n) for n in args.sizes.split(","))
    commands = {"pool": [], **COMMANDS, **(DASK_COMMANDS if args.dask else {})}
    if args.only:
        chosen = set(args.only.split(","))
        commands = {name: flags for name, flags in commands.items() if name == "pool" or name in chosen}
    trees = {name: TREE for name in commands}
    if args.before:
        for name in [name for name in commands if name != "pool"]:
            commands[f"before: {name}"] = commands[name]
            trees[f"before: {name}"] = os.path.abspath(args.before)
    records = ensure_dataset(args.data, max(sizes))
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    inputs = {n: subset_dir(records[:n], os.path.join(args.work, f"inputs-{n}")) for n in sizes}
    walls = {(name, n): [] for name in commands for n in sizes}
    for round_ in range(args.rounds):
        for n in sizes:
            for name, flags in commands.items():
                walls[(name, n)].append(run(name, flags, inputs[n], args.work, trees[name]))
                print(f"round {round_ + 1}, {n} pairs, {name}: {walls[(name, n)][-1]:.1f} s", flush=True)
    best = {key: min(values) for key, values in walls.items()}
    print(table(best, sizes, list(commands)))
    print("\n".join(statistics_costs(best, sizes, list(commands))))
    result = {"walls": {f"{name} @ {n}": values for (name, n), values in walls.items()}}
    if args.share_images:
        share = statistics_share_cost(records[:args.share_images])
        print(f"per-image chain, training example: {share['without_ms']:.3f} ms without statistics, "
              f"{share['with_ms']:.3f} ms with its share: {share['share_cost']:+.1%}")
        result["statistics_share"] = share
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
