"""Throughput of the tf.data loader on the job's shards, against decoding raw files every epoch.

    python -m benchmarks.loader_throughput --num_images 2000 --image_size 128

On the same images, in one run:
(a) ``beam_etl.loader.dataset.make_dataset`` on the job's shards in each image format (raw, jpeg,
    png): interleave, shuffle, batch, parse, the tf.Transform graph, prefetch; and the same with
    ``normalize_on_device=True`` (``_uint8`` rows: uint8 images and int8 class ids, the
    normalization left to the model's first layer on the accelerator);
(b) the approach of the TensorFlow segmentation tutorial that trains on Oxford pets: a tf.data
    pipeline that reads the JPEG and PNG files and decodes, resizes, flips and normalizes them
    every epoch (parallel map, batch, prefetch);
(c) the ceiling: reading the raw-format TFRecord files with no parsing at all.
Each is timed over --batches batches after a warm-up, in rounds (a, b, c, a, b, c, ...) so
machine noise hits all alike; the best round counts. The ratios are the figures to compare.
"""

from __future__ import annotations

import glob
import json
import os

import tensorflow as tf

from beam_etl import loader
from benchmarks.common import ensure_dataset, ensure_shards, images_per_second, parse_args

AUTOTUNE = tf.data.AUTOTUNE
FORMATS = ("raw", "jpeg", "png")


def decode_files_dataset(records, size: int, batch_size: int) -> tf.data.Dataset:
    """(b): the tutorial's pipeline, on the same images."""
    images = [record.image_uri for record in records]
    masks = [record.mask_uri for record in records]

    def load(image_path, mask_path):
        image = tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        image = tf.image.resize(image, (size, size))
        mask = tf.image.resize(mask, (size, size), method="nearest")
        if tf.random.uniform(()) > 0.5:
            image, mask = tf.image.flip_left_right(image), tf.image.flip_left_right(mask)
        return tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.int32) - 1

    return (tf.data.Dataset.from_tensor_slices((images, masks)).shuffle(len(images)).repeat()
            .map(load, num_parallel_calls=AUTOTUNE).batch(batch_size).prefetch(AUTOTUNE))


def records_only_dataset(output: str, batch_size: int) -> tf.data.Dataset:
    """(c): the same shards read with no parsing (the way the loader reads them)."""
    files = sorted(glob.glob(os.path.join(output, "*.tfrecord")))
    return (tf.data.Dataset.from_tensor_slices(files).repeat()
            .interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=loader.read_buffer_size(output)),
                        cycle_length=len(files), num_parallel_calls=AUTOTUNE, deterministic=False)
            .batch(batch_size).prefetch(AUTOTUNE))


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)

    records = ensure_dataset(args.data, args.num_images)
    outputs = {fmt: ensure_shards(records, args.image_size, fmt, args.work) for fmt in FORMATS}
    pipelines = {f"a_loader_{fmt}{suffix}": (lambda fmt=fmt, on_device=on_device: loader.make_dataset(
        outputs[fmt], "train", args.batch_size, repeat=True, normalize_on_device=on_device))
        for fmt in FORMATS for suffix, on_device in (("", False), ("_uint8", True))}
    pipelines["b_decode_files"] = lambda: decode_files_dataset(records, args.image_size, args.batch_size)
    pipelines["c_records_only"] = lambda: records_only_dataset(outputs["raw"], args.batch_size)

    best = {name: 0.0 for name in pipelines}
    for round_ in range(args.rounds):
        for name, make in pipelines.items():
            rate = images_per_second(make(), args.batches)
            best[name] = max(best[name], rate)
            print(f"round {round_ + 1}: {name:22s} {rate:10,.0f} images/s", flush=True)
    ratios = {f"{name[len('a_loader_'):]}_vs_decode_files": best[name] / best["b_decode_files"]
              for name in pipelines if name.startswith("a_loader_")}
    for suffix in ("", "_uint8"):
        ratios[f"raw{suffix}_vs_records_only"] = best[f"a_loader_raw{suffix}"] / best["c_records_only"]
    result = {"images_per_s": best, "ratios": ratios, "num_images": args.num_images,
              "image_size": args.image_size, "batch_size": args.batch_size, "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
