"""What the output's guarantees cost, part by part, against the per-image work they ride on.

    python -m benchmarks.safety_costs --num_images 400

Whole-job A/B runs (``benchmarks.preprocess_ab``) cannot resolve a 2% difference on this
shared 2-core machine, so this times the added work directly, in one process, beside the
per-image chain it is added to:

- the crc32c of every record written (the manifest's checksums), in microseconds per image,
  against ``process_example`` (decode, resize, encode, serialize) on the same images;
- once per run: taking and releasing the lease, the launch-time ownership check of a folder
  holding an earlier output, and the commit of a run of ``--files`` shards (the swap: renames
  and the manifest), in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import google_crc32c

from beam_etl import tfrecord
from beam_etl.beam import commit, lease
from beam_etl.image import chain as process
from beam_etl.beam.sources import files
from beam_etl.config import JobConfig
from beam_etl.output_layout import join, shard_name, staging_dir
from benchmarks.common import ensure_dataset


def per_image(records, config: JobConfig) -> dict[str, float]:
    serialized = []
    settings = config.chain_settings()
    started = time.perf_counter()
    for record in records:
        with open(record.image_uri, "rb") as handle:
            image = handle.read()
        with open(record.mask_uri, "rb") as handle:
            mask = handle.read()
        examples, _ = process.process_example(record, image, mask, "train", settings)
        serialized += [e.serialized for e in examples]
    chain = (time.perf_counter() - started) / len(records)
    framed = [tfrecord.frame(data) for data in serialized]
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        checksum = google_crc32c.Checksum()
        for data in framed:
            checksum.update(data)
        best = min(best, time.perf_counter() - started)
    crc = best / len(records)
    return {"chain_us_per_image": chain * 1e6, "crc32c_us_per_image": crc * 1e6,
            "crc32c_of_chain": crc / chain, "record_bytes": sum(map(len, framed)) / len(framed)}


def per_run(work: str, files: int, file_bytes: int) -> dict[str, float]:
    """Lease, ownership check and commit over a folder holding an earlier output of ``files``."""
    output = os.path.join(work, "out")
    names = [shard_name("train", i, files) for i in range(files)]
    payload = os.urandom(file_bytes)
    os.makedirs(output)
    for name in names:  # an earlier output...
        with open(join(output, name), "wb") as handle:
            handle.write(payload)
    manifest = {"format_version": 2, "splits": {"train": {"files": names}},
                "files": {name: {"bytes": file_bytes, "crc32c": "0", "num_examples": 1} for name in names}}
    with open(join(output, "manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    clock = time.perf_counter
    started = clock()
    commit.check_output(output, overwrite=True)
    checked = clock()
    holder = lease.take(output)
    commit.clear_leftovers(output)
    leased = clock()
    for name in names:  # ...and a run's staged files (not timed: the writers make them anyway)
        path = join(output, f"{staging_dir(holder.run_id)}/{name}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(payload)
    staged = clock()
    commit.commit(output, holder.run_id, dict(manifest, run_id=holder.run_id), names)
    committed = clock()
    shutil.rmtree(output)
    return {"check_output_ms": (checked - started) * 1e3, "lease_ms": (leased - checked) * 1e3,
            "commit_ms": (committed - staged) * 1e3, "files": files}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=400)
    parser.add_argument("--files", type=int, default=30, help="shards in the committed output")
    parser.add_argument("--data", default="/tmp/beam_etl_bench/data")
    args = parser.parse_args(argv)
    records = ensure_dataset(args.data, args.num_images)
    config = JobConfig(output="unused", sources=(files.Settings(("x",), ("y",)),), image_size=(128, 128),
                       statistics=False)
    figures = per_image(records, config)
    with tempfile.TemporaryDirectory() as work:
        figures.update(per_run(work, args.files, 1 << 20))
    print(json.dumps(figures, sort_keys=True))
    print(f"crc32c: {figures['crc32c_us_per_image']:.2f} us per image against "
          f"{figures['chain_us_per_image']:.0f} us of per-image work ({figures['crc32c_of_chain']:.3%}); "
          f"per run: ownership check {figures['check_output_ms']:.1f} ms, lease {figures['lease_ms']:.1f} ms, "
          f"commit of {args.files} files {figures['commit_ms']:.1f} ms")
    return figures


if __name__ == "__main__":
    main()
