"""The job reading from Cloud Storage against the same job reading the same files from local disk.

    python -m benchmarks.gcs_throughput --num_images 1000

Cloud Storage is the local emulator of the tests (tests/support/emulators.py: gcp-storage-emulator in
its own process, reached over loopback HTTP), so the figures show what the job's own GCS path
costs (one HTTP request per file, Beam's GCS client), not Google's network. Side by side, in
one run, in one process (the DirectRunner's default, since the emulator's anonymous
credentials are set per process): local -> local, gs:// -> local and gs:// -> gs://, and the
first two again with 8 threads (``--direct_running_mode multi_threading``), fastest of
--repeats. Then raw reads of the same objects through Beam's FileSystems with 1 and 8 threads:
the per-file latency that parallel reads hide.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import tempfile
import time

from apache_beam.io.filesystems import FileSystems

from benchmarks.common import ensure_dataset, subset_dir
from pipelines import preprocess
from tests.support import emulators


THREADS = ("--direct_running_mode", "multi_threading", "--direct_num_workers", "8")


def run_job(images: str, masks: str, output: str, size: int, *flags) -> float:
    started = time.perf_counter()
    preprocess.run(["--images", images, "--masks", masks, "--output", output, "--image_size", str(size),
                    "--image_format", "raw", "--num_shards", "2", "--split_fractions", "train=1.0",
                    "--no_statistics", "--no_cache", "--overwrite", "--runner", "DirectRunner", *flags])
    return time.perf_counter() - started


def read_all(uris: list[str], threads: int) -> float:
    def read(uri):
        with FileSystems.open(uri) as handle:
            return len(handle.read())

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(read, uris))
    assert total > 0
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each timing; the fastest counts")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    args = parser.parse_args(argv)
    records = ensure_dataset(args.data, args.num_images)[: args.num_images]
    n = len(records)
    results = {"num_images": n, "image_size": args.image_size}
    with tempfile.TemporaryDirectory() as work, emulators.gcs_emulator():
        local = subset_dir(records, os.path.join(work, "data"))
        emulators.create_bucket("bench")
        started = time.perf_counter()
        uris = emulators.upload_tree(pathlib.Path(local), "gs://bench/data")
        results["upload_files_per_s"] = len(uris) / (time.perf_counter() - started)
        local_in = (f"{local}/images/*.jpg", f"{local}/masks/*.png")
        gcs_in = ("gs://bench/data/images/*.jpg", "gs://bench/data/masks/*.png")
        runs = {
            "local -> local": (*local_in, os.path.join(work, "out")),
            "gs:// -> local": (*gcs_in, os.path.join(work, "out-gs")),
            "gs:// -> gs://": (*gcs_in, "gs://bench/out"),
            "local, 8 thr": (*local_in, os.path.join(work, "out-threads"), *THREADS),
            "gs://, 8 thr": (*gcs_in, os.path.join(work, "out-gs-threads"), *THREADS),
        }
        times = {name: float("inf") for name in runs}
        for _ in range(args.repeats):  # interleaved: drift on a shared machine hits all alike
            for name, (images, masks, output, *flags) in runs.items():
                times[name] = min(times[name], run_job(images, masks, output, args.image_size, *flags))
        reads = {threads: min(read_all(uris, threads) for _ in range(args.repeats)) for threads in (1, 8)}
    baseline = times["local -> local"]
    print(f"\n{n} images ({2 * n} files, sample_data seed 0) at {args.image_size}x{args.image_size}, "
          f"raw records, DirectRunner in one process; uploads {results['upload_files_per_s']:.0f} files/s")
    print(f"{'job':>15} {'seconds':>8} {'images/s':>9} {'ratio to local':>15}")
    for name, seconds in times.items():
        print(f"{name:>15} {seconds:>8.1f} {n / seconds:>9.0f} {baseline / seconds:>15.2f}")
    print(f"\nFileSystems reads of the {len(uris)} objects: 1 thread {len(uris) / reads[1]:.0f} files/s, "
          f"8 threads {len(uris) / reads[8]:.0f} files/s ({reads[1] / reads[8]:.2f}x)")
    results.update({"seconds": times, "images_per_s": {k: n / v for k, v in times.items()},
                    "ratio_to_local": {k: baseline / v for k, v in times.items()},
                    "read_files_per_s": {t: len(uris) / s for t, s in reads.items()}})
    print("\n" + json.dumps(results))
    return results


if __name__ == "__main__":
    main()
