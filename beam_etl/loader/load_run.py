"""What ``beam-etl load`` does once its flags are parsed and checked (:mod:`beam_etl.loader.cli`):
holds them against the output's manifest (a split it has, with examples to load; a batch this
machine can hold), then times the loader, writes a preview grid, or fits the development U-Net for
a few steps. It loads TensorFlow: the command line imports it only once its flags are right.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tensorflow as tf

from beam_etl.progress import ProgressLine
from beam_etl.output_layout import IncompleteOutputError
from beam_etl.loader import preview
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


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The command on the output ``args.data``, its flags parsed and checked by ``parser``: a flag
    the manifest shows to be wrong (a split it lacks, a batch too large) is refused through
    ``parser`` (exit status 2, naming it); returns the figures printed."""
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
        return _figures(args, manifest)
    except OutputMismatchError as error:  # (a file read whole as the dataset is made: the transform graph's)
        sys.exit(f"error: --data {args.data!r}: {error}")
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        # A record corrupt in place: TensorFlow's reader names no file; the checksums do.
        from beam_etl.loader import verification  # pylint: disable=import-outside-toplevel
        told = verification.reading_failed(args.data, error)
        if told is None:
            raise
        sys.exit(f"error: --data {args.data!r}: {told}")


def _figures(args, manifest: dict) -> dict:
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

