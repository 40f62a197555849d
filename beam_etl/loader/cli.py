"""The loader's command line: throughput, a preview grid, a short training run.

    python -m beam_etl.train_loader --data OUT --split train --batch_size 64 --steps 200
    python -m beam_etl.train_loader --data OUT --preview grid.png
    python -m beam_etl.train_loader --data OUT --train_steps 50 [--normalize_on_device]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import tensorflow as tf

from beam_etl.config import flag_type, positive_int
from beam_etl.progress import ProgressLine
from beam_etl.output_layout import IncompleteOutputError
from beam_etl.loader.dataset import (check_files, denormalize, load_manifest, make_dataset,
                                     normalization_layer, split_files)


def measure_throughput(dataset: tf.data.Dataset, steps: int, record_bytes: float, batch_size: int,
                       progress=None) -> dict:
    """Iterates ``steps`` batches (after one warm-up batch) and times them."""
    iterator = iter(dataset)
    next(iterator)  # start-up: threads, file opens, the transform graph
    images = 0
    started = time.perf_counter()
    for step in range(steps):
        try:
            image, _ = next(iterator)
        except StopIteration:
            break
        images += int(image.shape[0])
        if progress is not None:
            progress(step + 1)
    seconds = time.perf_counter() - started
    return {"batches": step + 1, "images": images, "seconds": seconds,
            "images_per_s": images / seconds, "batches_per_s": (step + 1) / seconds,
            "mb_per_s": images * record_bytes / seconds / 1e6, "batch_size": batch_size}


def _progress(unit: str, total: int, quiet: bool) -> ProgressLine | None:
    """A progress line on stderr (live on a terminal, a line every 10 s in a file); None if ``quiet``."""
    return None if quiet else ProgressLine(unit, total, prefix="")


MASK_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                         [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)


def preview_grid(images: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 picture: each example as itself and with its mask overlaid in colour, side by side."""
    tiles = []
    for image, mask in zip(images, masks):
        colours = MASK_COLOURS[np.mod(mask, len(MASK_COLOURS))].astype(np.float32)
        overlay = np.where((mask >= 0)[..., None],
                           (1 - alpha) * image + alpha * colours, image).astype(np.uint8)
        tiles.append(np.concatenate([image, overlay], axis=1))
    zoom = max(1, 128 // images.shape[1])  # small outputs are hard to see: at least 128 px high
    tiles = [tile.repeat(zoom, axis=0).repeat(zoom, axis=1) for tile in tiles]
    gap = np.full((4, tiles[0].shape[1], 3), 255, np.uint8)
    rows = [part for tile in tiles for part in (tile, gap)][:-1]
    return np.concatenate(rows, axis=0)


def write_preview(data_dir: str, split: str, path: str, count: int, seed: int) -> np.ndarray:
    stats = load_manifest(data_dir).get("statistics")
    dataset = make_dataset(data_dir, split, count, seed=seed, deterministic=True)
    image, mask = next(iter(dataset))
    picture = preview_grid(denormalize(image.numpy(), stats), mask.numpy())
    from PIL import Image  # pylint: disable=import-outside-toplevel
    with tf.io.gfile.GFile(path, "wb") as handle:
        Image.fromarray(picture).save(handle, format="PNG")
    return picture


def build_parser(prog: str = "python -m beam_etl.train_loader") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog,
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, metavar="DIR", help="Output directory of the job (local or gs://).")
    parser.add_argument("--split", default="train", help="Split to read. Default train.")
    parser.add_argument("--batch_size", type=flag_type(positive_int), default=64, help="Default 64.")
    parser.add_argument("--steps", type=flag_type(positive_int), default=100,
                        help="Batches to time for the throughput figures. Default 100.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON line.")
    parser.add_argument("--verbose", action="store_true",
                        help="Show TensorFlow's native logs (hidden on the command line otherwise).")
    parser.add_argument("--seed", type=flag_type(int), default=0, help="Shuffle and augmentation seed.")
    parser.add_argument("--deterministic", action="store_true", help="Same order on every run.")
    parser.add_argument("--no_shuffle", dest="shuffle", action="store_false", help="Read in file order.")
    parser.add_argument("--augment", action="store_true", help="Random flips (stateless, seeded).")
    parser.add_argument("--cache", action="store_true", help="Cache the serialized records in memory.")
    parser.add_argument("--drop_remainder", action="store_true", help="Static batch shapes (TPUs).")
    parser.add_argument("--normalize_on_device", action="store_true",
                        help="Feed uint8 images and compact mask ids; the model normalizes them "
                             "(normalization_layer). With --train_steps, the U-Net starts with it.")
    parser.add_argument("--data_service_address", default=None, metavar="grpc://HOST:PORT",
                        help="Run the input pipeline on this tf.data service dispatcher's workers.")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="Write a picture of a few examples with their masks overlaid, then exit.")
    parser.add_argument("--preview_count", type=flag_type(positive_int), default=8, help="Default 8.")
    parser.add_argument("--train_steps", type=flag_type(positive_int), default=None, metavar="N",
                        help="Fit a small U-Net for N steps fed by the loader, and again fed from "
                             "one in-memory batch; report step times and how input-bound it is.")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.train_loader") -> dict:
    args = build_parser(prog).parse_args(argv)
    try:
        manifest = load_manifest(args.data)
        split_files(args.data, manifest, args.split)
        check_files(args.data, manifest, manifest["splits"][args.split]["files"])
    except (IncompleteOutputError, ValueError) as error:
        sys.exit(f"error: --data {args.data!r}: {error}")
    try:
        return _run(args, manifest)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        # A record corrupt in place: TensorFlow's reader names no file; the checksums do.
        from beam_etl.loader import verify  # pylint: disable=import-outside-toplevel
        problems = verify.verify(args.data)
        if not problems:
            raise
        named = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        sys.exit(f"error: --data {args.data!r}: reading failed ({error.message.strip().splitlines()[0]}); "
                 f"checked against the manifest: {named}")


def _run(args, manifest: dict) -> dict:
    if args.preview:
        write_preview(args.data, args.split, args.preview, args.preview_count, args.seed)
        print(f"wrote {args.preview}: {args.preview_count} {args.split} examples, image | mask overlay")
        return {"preview": args.preview}
    dataset = make_dataset(args.data, args.split, args.batch_size, shuffle=args.shuffle, repeat=True,
                           augment=args.augment, cache=args.cache, deterministic=args.deterministic,
                           seed=args.seed, drop_remainder=args.drop_remainder,
                           data_service_address=args.data_service_address,
                           normalize_on_device=args.normalize_on_device)
    if args.train_steps:
        from beam_etl.tools import unet  # pylint: disable=import-outside-toplevel
        first_layer = normalization_layer(args.data) if args.normalize_on_device else None
        line = _progress("training steps (fed by the loader, then from memory)", 2 * args.train_steps, args.json)
        figures = unet.compare_input_bound(dataset, manifest, args.train_steps, first_layer,
                                           line.update if line else None)
    else:
        info = manifest["splits"][args.split]
        line = _progress("batches", args.steps, args.json)
        figures = measure_throughput(dataset, args.steps, info["bytes"] / info["num_examples"],
                                     args.batch_size, line.update if line else None)
    if line is not None:
        line.close()
    figures.update({"split": args.split, "data": args.data})
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        print("  ".join(f"{key}={value:,.2f}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in figures.items()))
    return figures


if __name__ == "__main__":
    main()
