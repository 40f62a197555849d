"""The loader's command line: throughput, a preview grid, a short training run.

    python -m beam_etl.train_loader --data OUT --split train --batch_size 64 --steps 200
    python -m beam_etl.train_loader --data OUT --preview grid.png [--columns 4] [--keys KEY,KEY]
    python -m beam_etl.train_loader --data OUT --train_steps 50 [--normalize_on_device]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tensorflow as tf

from beam_etl import host_ports
from beam_etl.config import FlagParser, flag_type, output_folder, positive_int
from beam_etl.progress import ProgressLine
from beam_etl.output_layout import IncompleteOutputError
from beam_etl.loader import preview, written_file
from beam_etl.loader.dataset import check_files, load_manifest, make_dataset, normalization_layer, split_files
from beam_etl.loader.listed_files import OutputMismatchError
from beam_etl.manifest_checks import split_problems


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


def _keys(text: str) -> list[str]:
    keys = [key for key in text.split(",") if key]
    if not keys:
        raise ValueError("expected KEY,KEY,...")
    return keys


def _seed(text: str) -> int:
    """A seed TensorFlow holds (an int64)."""
    value = int(text)
    if not -2 ** 63 <= value < 2 ** 63:
        raise ValueError("must be within [-2**63, 2**63) (a 64-bit integer)")
    return value


def _batch_size(text: str) -> int:
    """A batch size tf.data holds (an int64)."""
    value = positive_int(text)
    if value >= 2 ** 63:
        raise ValueError("must be at most 2**63 - 1 (a tf.data batch's size is a 64-bit integer)")
    return value


def _batch_refusal(batch_size: int, image_info: dict | None) -> str | None:
    """Why a batch of ``batch_size`` examples as the manifest's ``image`` describes them cannot
    be held in this machine's memory (a repeating dataset would grow until the process is
    killed, never filling it), or None. Counted as the loader yields them: float32 images and
    int32 masks, 4 bytes a value."""
    sizes = [image_info.get(key) for key in ("height", "width", "channels")] if isinstance(image_info, dict) else []
    if len(sizes) != 3 or not all(type(size) is int and size > 0 for size in sizes):
        return None  # (what the manifest says of its records is checked as the dataset is made)
    height, width, channels = sizes
    needed = batch_size * height * width * (channels + 1) * 4
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed <= memory:
        return None
    return (f"--batch_size {batch_size}: a batch of {batch_size} decoded {height}x{width} examples (float32 images "
            f"of {channels} channels, int32 masks) needs {needed} bytes, more than this machine's memory "
            f"({memory} bytes)")


def _service_address(text: str) -> str:
    host_ports.parse(text, "grpc")
    return text


def _check_flags(parser: argparse.ArgumentParser, args) -> None:
    """The flags checked before anything is read: exits with status 2 naming flag and value."""
    if args.data_service_address:  # (TensorFlow would wait for a dispatcher for ever)
        refusal = host_ports.refusal(*host_ports.parse(args.data_service_address, "grpc"))
        if refusal is not None:
            parser.error(f"--data_service_address {args.data_service_address!r}: no tf.data service "
                         f"dispatcher answers there ({refusal})")
    if args.preview is not None:
        refused = written_file.refusal("--preview", args.preview, args.data, ".png")
        if refused is not None:
            parser.error(refused)


def build_parser(prog: str = "python -m beam_etl.train_loader") -> argparse.ArgumentParser:
    parser = FlagParser(prog=prog,
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--data", required=True, type=flag_type(output_folder), metavar="DIR",
                        help="Output directory of the job (local or gs://).")
    parser.add_argument("--split", default="train", help="Split to read. Default train.")
    parser.add_argument("--batch_size", type=flag_type(_batch_size), default=64, help="Default 64.")
    parser.add_argument("--steps", type=flag_type(positive_int), default=100,
                        help="Batches to time for the throughput figures. Default 100.")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON line.")
    parser.add_argument("--verbose", action="store_true",
                        help="Show TensorFlow's native logs (hidden on the command line otherwise).")
    parser.add_argument("--seed", type=flag_type(_seed), default=0, help="Shuffle and augmentation seed.")
    parser.add_argument("--deterministic", action="store_true", help="Same order on every run.")
    parser.add_argument("--no_shuffle", dest="shuffle", action="store_false", help="Read in file order.")
    parser.add_argument("--augment", action="store_true", help="Random flips (stateless, seeded).")
    parser.add_argument("--cache", action="store_true", help="Cache the serialized records in memory.")
    parser.add_argument("--drop_remainder", action="store_true", help="Static batch shapes (TPUs).")
    parser.add_argument("--normalize_on_device", action="store_true",
                        help="Feed uint8 images and compact mask ids; the model normalizes them "
                             "(normalization_layer). With --train_steps, the U-Net starts with it.")
    parser.add_argument("--data_service_address", type=flag_type(_service_address), default=None,
                        metavar="grpc://HOST:PORT",
                        help="Run the input pipeline on this tf.data service dispatcher's workers.")
    parser.add_argument("--preview", default=None, metavar="PNG",
                        help="Write a picture of a few examples with their masks overlaid, then exit.")
    parser.add_argument("--preview_count", type=flag_type(positive_int), default=8,
                        help="Examples in the preview (drawn at random by --seed). Default 8.")
    parser.add_argument("--columns", type=flag_type(positive_int), default=2,
                        help="Examples per row of the preview. Default 2.")
    parser.add_argument("--keys", type=flag_type(_keys), default=None, metavar="KEY,KEY",
                        help="Preview these examples (their image/source_id), in this order.")
    parser.add_argument("--train_steps", type=flag_type(positive_int), default=None, metavar="N",
                        help="Fit a small U-Net for N steps fed by the loader, and again fed from "
                             "one in-memory batch; report step times and how input-bound it is.")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.train_loader") -> dict:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    try:
        manifest = load_manifest(args.data)
        splits = manifest.get("splits", {})
        if args.split not in splits:
            parser.error(f"--split {args.split!r}: the output has splits {', '.join(sorted(splits))}")
        info = manifest["splits"][args.split]
        if isinstance(info, dict) and info.get("num_examples") == 0 and not split_problems(manifest, args.split):
            parser.error(f"--split {args.split!r}: the output's split {args.split!r} holds no example to load")
        split_files(args.data, manifest, args.split)
        check_files(args.data, manifest, manifest["splits"][args.split]["files"])
        refusal = None if args.preview else _batch_refusal(args.batch_size, manifest.get("image"))
        if refusal is not None:
            parser.error(refusal)
    except IncompleteOutputError as error:  # (not an output: a wrong flag)
        parser.error(f"--data {args.data!r}: {error}")
    except ValueError as error:  # (an output that is not what its manifest says)
        sys.exit(f"error: --data {args.data!r}: {error}")
    try:
        return _run(args, manifest)
    except OutputMismatchError as error:  # (a file read whole as the dataset is made: the transform graph's)
        sys.exit(f"error: --data {args.data!r}: {error}")
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        # A record corrupt in place: TensorFlow's reader names no file; the checksums do.
        from beam_etl.loader import verify  # pylint: disable=import-outside-toplevel
        told = verify.reading_failed(args.data, error)
        if told is None:
            raise
        sys.exit(f"error: --data {args.data!r}: {told}")


def _run(args, manifest: dict) -> dict:
    if args.preview:
        try:
            picture = preview.write_preview(args.data, args.split, args.preview, args.preview_count, args.seed,
                                            args.columns, args.keys)
        except ValueError as error:
            sys.exit(f"error: {error}")
        shown = len(args.keys) if args.keys else min(args.preview_count, manifest["splits"][args.split]["num_examples"])
        print(f"wrote {args.preview}: {shown} {args.split} examples, image | mask overlay, "
              f"{picture.shape[1]}x{picture.shape[0]} px")
        return {"preview": args.preview}
    dataset = make_dataset(args.data, args.split, args.batch_size, shuffle=args.shuffle, repeat=True,
                           augment=args.augment, cache=args.cache, deterministic=args.deterministic,
                           seed=args.seed, drop_remainder=args.drop_remainder,
                           data_service_address=args.data_service_address,
                           normalize_on_device=args.normalize_on_device)
    if args.train_steps:
        from beam_etl.tools import unet  # pylint: disable=import-outside-toplevel
        first_layer = normalization_layer(args.data) if args.normalize_on_device else None
        line = _progress("training steps", 2 * args.train_steps, args.json)  # fed by the loader, then from memory
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
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    main()
