"""The job on a dask.distributed cluster of 1 and 2 workers, and on the DirectRunner, in one run.

    python -m benchmarks.dask_scaling --sizes 2000,16000 --memory_size 0

Each run is the whole job (statistics included) in a fresh process, on a fresh LocalCluster
of worker processes with one thread each, started as ``--dask_local_workers`` starts it
(``beam_etl.beam.launch.local_dask_cluster``: glibc's malloc defaults, TensorFlow on one thread), at
128x128 JPEG. Steady-state images/s come from
the difference between the two sizes (what is left of the smaller run is start-up: cluster
connection, graph building, tf.Transform tracing). Peak memory per worker is each worker
process's maximum resident set (``ru_maxrss``) at the end of its run; it should not grow with
the dataset: the job streams. The DirectRunner runs with 2 worker processes
(multi_processing) for comparison. With ``--repeats``, each runner runs that many times at
each size, interleaved with the others, and its fastest run counts (this machine is shared and
noisy; peak memory is the largest seen); the speed-up is also given round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks.common import ensure_dataset, steady_state, subset_dir


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run_job(inputs: str, output: str, runner_flags: list[str]) -> float:
    command = [sys.executable, "-m", "pipelines.preprocess",
               "--images", f"{inputs}/images/*.jpg", "--masks", f"{inputs}/masks/*.png",
               "--output", output, "--image_size", "128", "--overwrite", *runner_flags]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - started


def run_on_dask(inputs: str, output: str, workers: int, extra=()) -> tuple[float, list[float]]:
    from distributed import Client  # pylint: disable=import-outside-toplevel

    from beam_etl.beam.launch import local_dask_cluster  # pylint: disable=import-outside-toplevel

    with local_dask_cluster(workers) as cluster, Client(cluster) as client:
        seconds = run_job(inputs, output, ["--runner", "beam_dask.DaskRunner",
                                           "--dask_client_address", cluster.scheduler_address, *extra])
        peaks = sorted(client.run(_peak_rss_mb).values())
    return seconds, peaks


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,4000", help="two image counts for steady state")
    parser.add_argument("--memory_size", type=int, default=16000,
                        help="a larger count run on 2 Dask workers for peak memory only (0: skip)")
    parser.add_argument("--memory_npartitions", type=int, default=None,
                        help="also run --memory_size with --dask_npartitions N, for its peak memory")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each runner at each size, interleaved; the fastest counts")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    args = parser.parse_args(argv)
    small, large = (int(n) for n in args.sizes.split(","))
    records = ensure_dataset(args.data, max(large, args.memory_size))
    work = tempfile.mkdtemp(prefix="beam-etl-dask-")
    inputs = {n: subset_dir(records[:n], os.path.join(work, f"inputs-{n}"))
              for n in {small, large, args.memory_size} if n}

    runs, peaks = {}, {}  # (runner, size) -> walls, in round order
    for n in (small, large):
        for _ in range(args.repeats):  # interleaved; the fastest of each counts
            seconds = run_job(inputs[n], os.path.join(work, "out"),
                              ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
            runs.setdefault(("direct_2_processes", n), []).append(seconds)
            for workers in (1, 2):
                seconds, worker_peaks = run_on_dask(inputs[n], os.path.join(work, "out"), workers)
                runs.setdefault((f"dask_{workers}_workers", n), []).append(seconds)
                peaks[(workers, n)] = [max(pair) for pair in zip(worker_peaks, peaks.get((workers, n), worker_peaks))]
        print(f"{n} images: " + ", ".join(f"{name} " + "/".join(f"{s:.1f}" for s in walls) + " s"
                                          for (name, size), walls in runs.items() if size == n), flush=True)
    times = {key: min(walls) for key, walls in runs.items()}
    if args.memory_size:
        _, peaks[(2, args.memory_size)] = run_on_dask(inputs[args.memory_size], os.path.join(work, "out"), 2)
        if args.memory_npartitions:
            _, peaks[(f"2_npartitions_{args.memory_npartitions}", args.memory_size)] = run_on_dask(
                inputs[args.memory_size], os.path.join(work, "out"), 2,
                ["--dask_npartitions", str(args.memory_npartitions)])

    result = {"steady_images_per_s": {}, "startup_s": {}, "wall_s": {}}
    for name in ("direct_2_processes", "dask_1_workers", "dask_2_workers"):
        rate, startup = steady_state(small, times[(name, small)], large, times[(name, large)])
        result["steady_images_per_s"][name] = rate
        result["startup_s"][name] = startup
        result["wall_s"][name] = {small: times[(name, small)], large: times[(name, large)]}
    rates = result["steady_images_per_s"]
    result["dask_speedup_1_to_2_workers"] = rates["dask_2_workers"] / rates["dask_1_workers"]
    # Round by round (the i-th run at each size): the spread says how far the best-of figure
    # above can be trusted on a noisy machine.
    per_round = {workers: [steady_state(small, a, large, b)[0] for a, b in
                           zip(runs[(f"dask_{workers}_workers", small)], runs[(f"dask_{workers}_workers", large)])]
                 for workers in (1, 2)}
    result["dask_speedup_per_round"] = [two / one for one, two in zip(per_round[1], per_round[2])]
    result["dask_2_vs_direct_2"] = rates["dask_2_workers"] / rates["direct_2_processes"]
    result["peak_rss_mb_per_worker"] = {f"{workers}_workers_{n}_images": [round(p) for p in values]
                                        for (workers, n), values in peaks.items()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
