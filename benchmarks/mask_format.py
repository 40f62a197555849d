"""Does a PNG mask next to a raw image cost the loader anything? Raw images with raw masks
against the same records with their masks re-encoded as PNG, alternating, in one run.

    python -m benchmarks.mask_format --num_images 4000 --rounds 4

The job's raw output (``--image_format raw``: raw masks) is copied with every mask re-encoded
as a single-channel PNG (``beam_etl.image.encoding.encode_mask``) and the manifest's
``mask_format``, file sizes and checksums updated; both copies drop the statistics (the
transform graph decodes the mask format it was built for) and are read by
``loader.make_dataset`` with ``normalize_on_device=True`` (uint8 images, masks decoded by the
manifest's ``mask_format``), best of the rounds. A ratio near 1.0 means PNG masks are free.
"""

from __future__ import annotations

import json
import os
import shutil

import google_crc32c
import numpy as np
import tensorflow as tf

from beam_etl import loader, schema, tfrecord
from beam_etl.image import encoding
from beam_etl.output_layout import MANIFEST
from benchmarks.common import ensure_dataset, ensure_shards, images_per_second, parse_args


def _copy(raw_output: str, target: str, png_masks: bool) -> str:
    """``raw_output`` without its statistics (the graph decodes the format it was built for),
    with each record's mask re-encoded as PNG if ``png_masks`` (cached between runs)."""
    if os.path.exists(os.path.join(target, MANIFEST)):
        return target
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(raw_output, target)
    with open(os.path.join(raw_output, MANIFEST), encoding="utf-8") as handle:
        manifest = json.load(handle)
    height, width = manifest["image"]["height"], manifest["image"]["width"]
    spec = schema.feature_spec()
    manifest["statistics"] = None
    for name in (name for split in manifest["splits"].values() for name in split["files"] if png_masks):
        records = []
        for serialized in tf.data.TFRecordDataset(os.path.join(raw_output, name)):
            example = tf.train.Example.FromString(serialized.numpy())
            features = tf.io.parse_single_example(serialized, spec)
            mask = np.frombuffer(features[schema.MASK_ENCODED].numpy(), np.uint8).reshape(height, width)
            example.features.feature[schema.MASK_ENCODED].bytes_list.value[0] = encoding.encode_mask(mask, "png")
            example.features.feature[schema.MASK_FORMAT].bytes_list.value[0] = b"png"
            records.append(tfrecord.frame(example.SerializeToString()))
        data = b"".join(records)
        with open(os.path.join(target, name), "wb") as handle:
            handle.write(data)
        manifest["files"][name].update(bytes=len(data),
                                       crc32c=google_crc32c.Checksum(data).hexdigest().decode("ascii"))
    manifest["image"]["mask_format"] = "png" if png_masks else "raw"
    with open(os.path.join(target, MANIFEST), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    return target


def main(argv=None) -> dict:
    args = parse_args(__doc__, argv)
    records = ensure_dataset(args.data, args.num_images)
    raw = ensure_shards(records, args.image_size, "raw", args.work)
    outputs = {"raw_masks": _copy(raw, raw + "-raw-masks", False), "png_masks": _copy(raw, raw + "-png-masks", True)}
    best = dict.fromkeys(outputs, 0.0)
    for round_ in range(args.rounds):
        for name, output in outputs.items():
            dataset = loader.make_dataset(output, "train", args.batch_size, repeat=True, normalize_on_device=True)
            rate = images_per_second(dataset, args.batches)
            best[name] = max(best[name], rate)
            print(f"round {round_ + 1}: {name:10s} {rate:10,.0f} images/s", flush=True)
    result = {"images_per_s": best, "png_vs_raw_masks": best["png_masks"] / best["raw_masks"],
              "num_images": args.num_images, "image_size": args.image_size,
              "batch_size": args.batch_size, "cpus": os.cpu_count()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
