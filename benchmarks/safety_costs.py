"""What the output's guarantees cost, part by part, against the per-image work they ride on.

    python -m benchmarks.safety_costs --num_images 400

Whole-job A/B runs (``benchmarks.preprocess_ab``) cannot resolve a 2% difference on this
shared 2-core machine, so this times the added work directly, in one process, beside the
per-image chain it is added to:

- the crc32c of every record written (the manifest's checksums), in microseconds per image,
  against ``process_example`` (decode, resize, encode, serialize) on the same images;
- once per run: taking and releasing the lease, the launch-time ownership check of a folder
  holding an earlier output of the job (``--files`` shards a split), and the commit of a run's
  files over it (the swap: renames and the manifest), in milliseconds.
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
from beam_etl.output_layout import MANIFEST, join, staging_dir
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


def earlier_output(work: str, data: str, files: int) -> str:
    """An output of the job (``files`` shards) over the images of ``data``: what a run finds in
    the folder it is to replace."""
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel  # (a run of the job)

    output = os.path.join(work, "earlier")
    preprocess.run(["--oxford_pets", data, "--output", output, "--image_size", "128", "--num_shards", str(files),
                    "--no_cache"])
    return output


def per_run(work: str, earlier: str) -> dict[str, float]:
    """Lease, ownership check and commit over a folder holding ``earlier``, an output of the job,
    replaced by a run's staged files of the same names and sizes."""
    with open(join(earlier, MANIFEST), encoding="utf-8") as handle:
        manifest = json.load(handle)
    names = sorted(manifest["files"])
    output = os.path.join(work, "out")
    shutil.copytree(earlier, output)
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
        shutil.copyfile(join(earlier, name), path)
    staged = clock()
    commit.commit(output, holder.run_id, dict(manifest, run_id=holder.run_id), names)
    committed = clock()
    shutil.rmtree(output)
    return {"check_output_ms": (checked - started) * 1e3, "lease_ms": (leased - checked) * 1e3,
            "commit_ms": (committed - staged) * 1e3, "files": len(names),
            "shards": sum(len(split["files"]) for split in manifest["splits"].values())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=400)
    parser.add_argument("--files", type=int, default=30, help="shards per split in the committed output")
    parser.add_argument("--data", default="/tmp/beam_etl_bench/data")
    args = parser.parse_args(argv)
    records = ensure_dataset(args.data, args.num_images)
    config = JobConfig(output="unused", sources=(files.Settings(("x",), ("y",)),), image_size=(128, 128),
                       statistics=False)
    figures = per_image(records, config)
    with tempfile.TemporaryDirectory() as work:
        figures.update(per_run(work, earlier_output(work, args.data, args.files)))
    print(json.dumps(figures, sort_keys=True))
    print(f"crc32c: {figures['crc32c_us_per_image']:.2f} us per image against "
          f"{figures['chain_us_per_image']:.0f} us of per-image work ({figures['crc32c_of_chain']:.3%}); "
          f"per run: ownership check {figures['check_output_ms']:.1f} ms, lease {figures['lease_ms']:.1f} ms, "
          f"commit of {figures['files']} files ({figures['shards']} shards) {figures['commit_ms']:.1f} ms")
    return figures


if __name__ == "__main__":
    main()
