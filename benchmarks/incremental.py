"""Reruns against a fresh run: what the cache of outcomes saves, start to finish.

    python -m benchmarks.incremental --num_images 7390 --rounds 2

Each round, on the first 90% of the pairs: a fresh run (empty output, empty cache); the same
command again with ``--overwrite`` (nothing new: the output is found up to date,
``beam_etl.beam.up_to_date``); the same after one input's times changed (its bytes are hashed:
still up to date); the same after a file beside the inputs that the job does not hash changed
(the job runs, every outcome from its cache); a run into another folder killed (SIGKILL to
its process group, as a machine dies) once half of the inputs are in its cache, then the same
command again (the resume); then the whole set with ``--overwrite`` (10% new inputs). Every
run is the README's command (no runner flags, statistics on) in a fresh process, timed from
start to exit. Prints each run's wall and its ratio to the fresh run's, best of the rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from beam_etl import file_states
from beam_etl.beam import outcome_store
from beam_etl.output_layout import CACHE_DIR
from benchmarks.common import ensure_dataset, subset_dir

TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(directory: str, output: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.preprocess", "--images", f"{directory}/images/*.jpg",
            "--masks", f"{directory}/masks/*.png", "--output", output, "--image_size", "128", *extra]


def run_job(directory: str, output: str, *extra: str, up_to_date_expected: bool = False) -> float:
    """Seconds the job ran; fails unless it found the output up to date exactly when expected."""
    os.sync()
    started = time.perf_counter()
    done = subprocess.run(_command(directory, output, *extra), cwd=TREE, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": TREE}, text=True)
    seconds = time.perf_counter() - started
    if ("is up to date" in done.stdout) != up_to_date_expected:
        raise RuntimeError(f"expected {'an' if up_to_date_expected else 'no'} up-to-date output:\n{done.stdout}")
    return seconds


def _cached(output: str) -> int:
    """Entries in the output's cache."""
    return len(outcome_store.OutcomeStore(os.path.join(output, CACHE_DIR)).entries())


def kill_half_way(directory: str, output: str, inputs: int) -> float:
    """Starts the job and kills it (its whole process group) once half the inputs are cached;
    returns the seconds it ran."""
    started = time.perf_counter()
    job = subprocess.Popen(_command(directory, output), cwd=TREE, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": TREE}, start_new_session=True)
    try:
        while _cached(output) < inputs // 2 and job.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    if os.path.exists(os.path.join(output, "manifest.json")):
        raise RuntimeError("the run ended before it was killed")
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=7390)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-incremental"))
    args = parser.parse_args(argv)
    records = ensure_dataset(args.data, args.num_images)
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    first = int(len(records) * 0.9)
    directory = subset_dir(records[:first], os.path.join(args.work, "inputs"))
    touched, beside = "nothing new, one input touched", "nothing new, a file beside them touched (the job runs)"
    walls = {"fresh": [], "nothing new": [], touched: [], beside: [], "resumed (killed half way)": [], "10% new": []}
    notes = os.path.join(directory, "images", "notes.txt")  # under a source folder, no input: never hashed
    with open(notes, "w", encoding="utf-8") as handle:
        handle.write("not an input\n")
    killed_after = []
    for round_ in range(args.rounds):
        output = os.path.join(args.work, f"out{round_}")
        for name in ("images", "masks"):  # back to 90%
            for record in records[first:]:
                path = os.path.join(directory, name, os.path.basename(record.image_uri if name == "images"
                                                                       else record.mask_uri))
                if os.path.lexists(path):
                    os.remove(path)
        time.sleep(file_states.SETTLE_SECONDS)  # inputs that settled, as a dataset's have
        walls["fresh"].append(run_job(directory, output))
        walls["nothing new"].append(run_job(directory, output, "--overwrite", up_to_date_expected=True))
        os.utime(os.path.join(directory, "images", sorted(os.listdir(os.path.join(directory, "images")))[0]))
        time.sleep(file_states.SETTLE_SECONDS)
        walls[touched].append(run_job(directory, output, "--overwrite", up_to_date_expected=True))
        os.utime(notes)
        time.sleep(file_states.SETTLE_SECONDS)
        walls[beside].append(run_job(directory, output, "--overwrite"))
        killed = os.path.join(args.work, f"killed{round_}")
        killed_after.append(kill_half_way(directory, killed, first))
        walls["resumed (killed half way)"].append(run_job(directory, killed))
        shutil.rmtree(killed)
        for record in records[first:]:
            os.symlink(record.image_uri, os.path.join(directory, "images", os.path.basename(record.image_uri)))
            os.symlink(record.mask_uri, os.path.join(directory, "masks", os.path.basename(record.mask_uri)))
        walls["10% new"].append(run_job(directory, output, "--overwrite"))
        shutil.rmtree(output)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in walls.items()), flush=True)
    best = {name: min(values) for name, values in walls.items()}
    print("| run | wall | / fresh |\n|---|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds:.1f} s | {seconds / best['fresh']:.2f} |")
    print(f"(the killed runs ran {', '.join(f'{s:.1f}' for s in killed_after)} s before the kill)")
    return {"walls": walls, "killed_after": killed_after}


if __name__ == "__main__":
    main()
