"""What the benchmarks share: the sample dataset, the job's shards made once, timing helpers,
and running a script against another revision's code. Benchmarks import this and
``beam_etl``/``pipelines``, never each other and never ``tests``.
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

from beam_etl import tfrecord
from beam_etl.config import ChainSettings, JobConfig
from beam_etl.elements import SourceRecord
from beam_etl.image import chain
from beam_etl.output_layout import MANIFEST
from beam_etl.tools import sample_data


def ensure_dataset(root: str, num_images: int) -> list[SourceRecord]:
    marker = os.path.join(root, f".complete-{num_images}")
    if not os.path.exists(marker):
        sample_data.generate(root, num_images=num_images, seed=0)
        open(marker, "w").close()
    images = sorted(glob.glob(os.path.join(root, "images", "*.jpg")))[:num_images]
    return [SourceRecord(key=os.path.basename(p)[:-4], image_uri=p,
                         mask_uri=os.path.join(root, "annotations", "trimaps", os.path.basename(p)[:-4] + ".png"))
            for p in images]


def subset_dir(records: list[SourceRecord], directory: str) -> str:
    """Symlinks to ``records`` in a fresh images/ + masks/ layout; returns the directory."""
    os.makedirs(os.path.join(directory, "images"))
    os.makedirs(os.path.join(directory, "masks"))
    for record in records:
        os.symlink(record.image_uri, os.path.join(directory, "images", os.path.basename(record.image_uri)))
        os.symlink(record.mask_uri, os.path.join(directory, "masks", os.path.basename(record.mask_uri)))
    return directory


# --- the hand-written baseline: a multiprocessing.Pool running the job's per-image chain -------

_SETTINGS: ChainSettings | None = None


def _init(config: JobConfig) -> None:
    global _SETTINGS  # pylint: disable=global-statement  # per-process state of the Pool
    _SETTINGS = config.chain_settings()


def _pool_work(record: SourceRecord) -> list[bytes]:
    with open(record.image_uri, "rb") as handle:
        image = handle.read()
    with open(record.mask_uri, "rb") as handle:
        mask = handle.read()
    examples, _ = chain.process_example(record, image, mask, "train", _SETTINGS)
    return [e.serialized for e in examples]


def run_pool(records, config: JobConfig, workers: int, output: str) -> float:
    """Every record through :func:`beam_etl.image.chain.process_example` in a ``workers``-process
    Pool, the records framed into one file; returns the wall."""
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers, _init, (config,)) as pool, \
            open(os.path.join(output, "pool.tfrecord"), "wb") as handle:
        for serialized in pool.imap_unordered(_pool_work, records, chunksize=16):
            tfrecord.write_records(handle, serialized)
    return time.perf_counter() - started


def timed_in_fresh_dir(work: str, run) -> float:
    """``run(output_dir)``'s time, starting with nothing left to write back to disk, and the
    output deleted afterwards: gigabytes of earlier runs' output still being written back
    slow down whichever run comes next (the job, which writes each example twice, most)."""
    os.sync()
    output = tempfile.mkdtemp(dir=work)
    try:
        return run(output)
    finally:
        shutil.rmtree(output)


def steady_state(n_small: int, t_small: float, n_large: int, t_large: float) -> tuple[float, float]:
    rate = (n_large - n_small) / (t_large - t_small)
    return rate, t_small - n_small / rate


def ensure_shards(records, size: int, image_format: str, root: str) -> str:
    """The job's output for ``records`` (cached between runs)."""
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel  # Beam only here

    output = os.path.join(root, f"{image_format}-{size}-{len(records)}")
    if not os.path.exists(os.path.join(output, MANIFEST)):
        subset = os.path.join(root, f"inputs-{len(records)}")
        if not os.path.exists(subset):
            subset_dir(records, subset)
        preprocess.run(["--images", os.path.join(subset, "images", "*.jpg"),
                        "--masks", os.path.join(subset, "masks", "*.png"), "--output", output,
                        "--image_size", str(size), "--image_format", image_format, "--overwrite",
                        "--split_fractions", "train=1.0", "--num_shards", "8",
                        "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"])
    return output


def images_per_second(dataset, batches: int, warmup: int = 5) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):  # warm-up: threads, autotuning, file opens
        next(iterator)
    images = 0
    started = time.perf_counter()
    for _ in range(batches):
        element = next(iterator)
        first = element[0] if isinstance(element, tuple) else element
        images += int(first.shape[0])
    return images / (time.perf_counter() - started)


def build_parser(description: str) -> argparse.ArgumentParser:
    """The loader benchmarks' flags: which shards (made once under --work), how long to time."""
    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=2000)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-loader"))
    return parser


def parse_args(description: str, argv=None) -> argparse.Namespace:
    return build_parser(description).parse_args(argv)


def run_in(tree: str, script: str, *args: str) -> dict:
    """``script`` with ``args`` in a fresh process whose imports come from ``tree`` (its working
    directory and ``PYTHONPATH``); returns the JSON object on the last line it prints.

    The script is run by path, so the other revision need not have it; it must import nothing
    at its top that the other revision lacks (this module included).
    """
    completed = subprocess.run(
        [sys.executable, os.path.abspath(script), *args],
        cwd=tree, check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(completed.stdout.strip().splitlines()[-1])
