"""Where the raw loader's time goes: the ceiling, then one step of the loader added at a time.

    python -m benchmarks.loader_breakdown --num_images 2000

On the raw-format shards of ``benchmarks.loader_throughput`` (made by it if missing), in one
run, tf.data pipelines built by hand from the loader's own steps, ending in uint8 images and
masks as ``normalize_on_device`` does:
- ``records``: interleave of the files and batch, no parsing (the benchmark's ceiling, (c));
  every reader here reads as the loader does (``loader.read_buffer_size``);
- ``+shuffle``: the 2,048-record shuffle buffer before the batch;
- ``+parse``: batched ``parse_example`` and ``decode_raw`` of image and mask, without and
  with the shuffle;
- ``ids_*``: with each record's file name (what parse errors quote) and class ids made
  three ways: none, subtraction (masks known to hold only class values), and subtraction,
  comparison and select (any mask), batched in parallel as the loader does;
  ``files_repeated`` repeats the file list before the interleave (no epoch boundaries),
  ``epochs`` shuffles and then repeats, as the loader does (exact epochs);
- ``loader``: ``loader.make_dataset(..., normalize_on_device=True)`` itself;
- ``bytes_*``: the figure for a record layout that is not ``tf.train.Example`` (not what the
  job writes; measured so that the choice has a number): the same shards rewritten once, each
  record the image's bytes followed by the mask's; ``bytes_records`` is their own ceiling,
  ``bytes_ids_subtract_epochs`` the loader's steps with ``parse_example`` replaced by one
  ``decode_raw`` of the batch, split into image and mask.
Rounds interleave the pipelines, so machine noise hits all alike; each row prints its range.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import tensorflow as tf

from beam_etl import schema
from beam_etl import loader
from beam_etl.loader import transform_graph
from benchmarks.common import ensure_dataset, ensure_shards, images_per_second, parse_args

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE = loader.DEFAULT_SHUFFLE_BUFFER
PIXELS = {key: tf.io.FixedLenFeature([], tf.string) for key in (schema.IMAGE_ENCODED, schema.MASK_ENCODED)}


def without_examples(output: str, files: list[str]) -> list[str]:
    """``files`` rewritten (once, next to ``output``) with each record's image bytes followed
    by its mask bytes, no ``tf.train.Example`` around them."""
    directory = output.rstrip("/") + "-bytes"
    os.makedirs(directory, exist_ok=True)
    rewritten = []
    for name in files:
        target = os.path.join(directory, os.path.basename(name))
        if not os.path.exists(target):
            with tf.io.TFRecordWriter(target + ".tmp") as writer:
                for serialized in tf.data.TFRecordDataset(name):
                    example = tf.io.parse_single_example(serialized, PIXELS)
                    writer.write(example[schema.IMAGE_ENCODED].numpy() + example[schema.MASK_ENCODED].numpy())
            os.rename(target + ".tmp", target)
        rewritten.append(target)
    return rewritten


def pipelines(output: str, batch_size: int) -> dict:
    files = sorted(glob.glob(os.path.join(output, "*.tfrecord")))
    byte_files = without_examples(output, files)
    manifest = loader.load_manifest(output)
    height, width = manifest["image"]["height"], manifest["image"]["width"]
    class_ids = tf.constant(transform_graph.graph_statistics(output, manifest["image"])["class_ids"])

    def records(names: bool, repeat_files: bool = True, files=files):
        def read(name):
            file_records = tf.data.TFRecordDataset(name, buffer_size=loader.read_buffer_size(output))
            return file_records.map(lambda record: (record, name)) if names else file_records

        names_dataset = tf.data.Dataset.from_tensor_slices(files)
        return (names_dataset.repeat() if repeat_files else names_dataset).interleave(
            read, cycle_length=len(files), num_parallel_calls=AUTOTUNE, deterministic=False)

    def parse(serialized, names=None, ids=None):
        features = tf.io.parse_example(serialized, PIXELS, example_names=names)
        image = tf.reshape(tf.io.decode_raw(features[schema.IMAGE_ENCODED], tf.uint8), [-1, height, width, 3])
        mask = tf.reshape(tf.io.decode_raw(features[schema.MASK_ENCODED], tf.uint8), [-1, height, width])
        if ids is not None:
            mask = transform_graph.class_ids_of(mask, class_ids, tf.int8, only_classes=ids == "subtract")
        return image, mask

    def split(serialized, names=None, ids=None):  # the bytes layout: one decode_raw, then split
        del names  # a record of the wrong length fails in decode_raw
        pixels = tf.io.decode_raw(serialized, tf.uint8)
        image = tf.reshape(pixels[:, :height * width * 3], [-1, height, width, 3])
        mask = tf.reshape(pixels[:, height * width * 3:], [-1, height, width])
        return image, transform_graph.class_ids_of(mask, class_ids, tf.int8, only_classes=ids == "subtract")

    def with_names(repeat_files: bool, ids, decode=parse, files=files):
        def make():
            dataset = records(True, repeat_files, files).shuffle(SHUFFLE)
            if not repeat_files:
                dataset = dataset.repeat()
            return dataset.batch(batch_size, num_parallel_calls=AUTOTUNE).map(
                lambda serialized, names: decode(serialized, names, ids), num_parallel_calls=AUTOTUNE)
        return make

    made = {
        "records": lambda: records(False).batch(batch_size),
        "+shuffle": lambda: records(False).shuffle(SHUFFLE).batch(batch_size),
        "+parse": lambda: records(False).batch(batch_size).map(parse, num_parallel_calls=AUTOTUNE),
        "+shuffle+parse": lambda: records(False).shuffle(SHUFFLE).batch(batch_size).map(
            parse, num_parallel_calls=AUTOTUNE),
    }
    for order, repeat_files in (("files_repeated", True), ("epochs", False)):
        for ids in ("none", "subtract", "check"):
            made[f"ids_{ids}_{order}"] = with_names(repeat_files, None if ids == "none" else ids)
    made["loader"] = lambda: loader.make_dataset(output, "train", batch_size, repeat=True,
                                                       normalize_on_device=True)
    made["bytes_records"] = lambda: records(False, files=byte_files).batch(batch_size)
    made["bytes_ids_subtract_epochs"] = with_names(False, "subtract", split, byte_files)
    return made


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)

    output = ensure_shards(ensure_dataset(args.data, args.num_images), args.image_size, "raw", args.work)
    made = pipelines(output, args.batch_size)
    rates = {name: [] for name in made}
    for round_ in range(args.rounds):
        for name, make in made.items():
            # 20 warm-up batches: the shuffle buffer fills too
            rates[name].append(images_per_second(make().prefetch(AUTOTUNE), args.batches, warmup=20))
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {values[-1]:,.0f}" for name, values in rates.items()),
              flush=True)
    ceiling = max(rates["records"])
    for name, values in rates.items():
        print(f"{name:26s} {min(values):8,.0f} - {max(values):8,.0f} images/s   best {max(values) / ceiling:.2f} of records")
    return {name: {"min": float(np.min(values)), "max": float(np.max(values))} for name, values in rates.items()}


if __name__ == "__main__":
    main()
