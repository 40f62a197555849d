"""A picture of a few examples as the records hold them: each image beside its mask overlaid, in
a grid, captioned with its key and class, above a legend of the mask values shown.

The records are read as written (not through the transform graph), so a mask value has one
colour whatever the run's flags (with or without statistics), and the legend names it: the
Oxford-IIIT trimap's names for an output of an ``--oxford_pets`` source, "padding (ignored)"
for ``--resize pad``'s, ``value N`` otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np
import tensorflow as tf

from beam_etl import lineage, schema
from beam_etl.loader.dataset import load_manifest, split_files
from beam_etl.loader.tf_decoding import decode_images, decode_masks

# One colour per mask value (value mod 8), the same in every picture.
MASK_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                         [145, 30, 180], [70, 240, 240], [240, 50, 230]], np.uint8)
OXFORD_TRIMAP = {1: "pet", 2: "background", 3: "pet border"}  # the dataset's README
_CAPTION, _GAP, _FONT = 16, 4, cv2.FONT_HERSHEY_SIMPLEX


def colour_of(value: int) -> np.ndarray:
    return MASK_COLOURS[value % len(MASK_COLOURS)]


def class_names(manifest: dict) -> dict[int, str]:
    """Names of mask values: those the output's source gives (Oxford-IIIT's trimap), and the
    padding of ``--resize pad``."""
    names = dict(OXFORD_TRIMAP) if manifest.get("flags", {}).get("oxford_pets") else {}
    ignored = manifest.get("image", {}).get("mask_ignore_value")
    if ignored is not None:
        names[ignored] = "padding (ignored)"
    return names


def read_examples(data_dir: str, split: str, count: int, keys: list[str] | None = None,
                  seed: int = 0) -> list[dict]:
    """``count`` examples of ``split`` (shuffled by ``seed``), or those named by ``keys`` in
    that order (ValueError naming any not there): ``{"key", "label_name", "image", "mask"}``."""
    manifest = load_manifest(data_dir)
    info = manifest["image"]
    records = tf.data.TFRecordDataset(split_files(data_dir, manifest, split))
    if keys is None:  # (past the split's size, every example: also a count past what take holds)
        records = records.shuffle(4096, seed=seed).take(min(count, manifest["splits"][split]["num_examples"]))
    found = {}
    for serialized in records:
        features = tf.io.parse_single_example(serialized, schema.feature_spec())
        key = features[schema.IMAGE_SOURCE_ID].numpy().decode("utf-8")
        if keys is not None and key not in keys:
            continue
        found[key] = {
            "key": key, "label_name": features[schema.CLASS_TEXT].numpy().decode("utf-8"),
            "image": decode_images(features[schema.IMAGE_ENCODED][None], info).numpy()[0],
            "mask": decode_masks(features[schema.MASK_ENCODED][None], info).numpy()[0]}
        if keys is not None and len(found) == len(set(keys)):
            break
    if keys is None:
        return list(found.values())
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValueError(f"--keys: no example {', '.join(map(repr, missing))} in split {split!r} of {data_dir}"
                         f"{_elsewhere(data_dir, missing)}")
    return [found[key] for key in keys]


def _elsewhere(data_dir: str, keys: list[str]) -> str:
    """``" ('k' is in split 'test': --split test)"``: the split the lineage index gives the first
    of ``keys`` it holds; "" where it holds none of them, or cannot be read."""
    try:
        _, index = lineage.read_output(data_dir)
    except (OSError, ValueError, KeyError, TypeError, tf.errors.OpError):  # (the index is for diff to judge)
        return ""
    for key in keys:
        split = (index.get(key) or {}).get("split")
        if isinstance(split, str):
            return f" ({key!r} is in split {split!r}: --split {split})"
    return ""


def _text(canvas: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(canvas, text, (x, y), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def preview_grid(examples: list[dict], columns: int = 2, names: dict[int, str] | None = None,
                 alpha: float = 0.45) -> np.ndarray:
    """uint8 picture: ``columns`` examples a row (fewer examples: one row of them), each its image
    and its mask overlaid side by side with a caption, and a legend of every mask value shown."""
    names = names or {}
    columns = min(columns, len(examples))  # (a canvas of empty columns: terabytes for --columns 100000000)
    height, width = examples[0]["image"].shape[:2]
    zoom = max(1, 128 // height)  # small outputs are hard to see: at least 128 px high
    cell_h, cell_w = height * zoom + _CAPTION, 2 * width * zoom
    rows = -(-len(examples) // columns)
    values = sorted({int(v) for example in examples for v in np.unique(example["mask"])})
    legend_h = _CAPTION * (-(-len(values) // 4)) + _GAP
    canvas = np.full((rows * (cell_h + _GAP) + legend_h, columns * (cell_w + _GAP) - _GAP, 3), 255, np.uint8)
    for index, example in enumerate(examples):
        image, mask = example["image"], example["mask"]
        overlay = ((1 - alpha) * image + alpha * MASK_COLOURS[mask % len(MASK_COLOURS)]).astype(np.uint8)
        tile = np.concatenate([image, overlay], axis=1).repeat(zoom, axis=0).repeat(zoom, axis=1)
        top, left = (index // columns) * (cell_h + _GAP), (index % columns) * (cell_w + _GAP)
        canvas[top:top + height * zoom, left:left + cell_w] = tile
        caption = example["key"] + (f" ({example['label_name']})" if example["label_name"] else "")
        _text(canvas, caption[: cell_w // 7], left + 2, top + height * zoom + _CAPTION - 4)
    top = rows * (cell_h + _GAP)
    slot = max(1, canvas.shape[1] // 4)
    for index, value in enumerate(values):
        y, x = top + (index // 4) * _CAPTION, (index % 4) * slot
        canvas[y + 3:y + _CAPTION - 3, x + 2:x + 12] = colour_of(value)
        _text(canvas, f"{value}: {names.get(value, f'value {value}')}", x + 16, y + _CAPTION - 4)
    return canvas


def write_preview(data_dir: str, split: str, path: str, count: int, seed: int = 0, columns: int = 2,
                  keys: list[str] | None = None) -> np.ndarray:
    """Writes the picture of :func:`preview_grid` as a PNG at ``path`` (local or ``gs://``)."""
    examples = read_examples(data_dir, split, count, keys, seed)
    picture = preview_grid(examples, columns, class_names(load_manifest(data_dir)))
    from PIL import Image  # pylint: disable=import-outside-toplevel

    with tf.io.gfile.GFile(path, "wb") as handle:
        Image.fromarray(picture).save(handle, format="PNG")
    return picture
