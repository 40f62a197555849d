"""Batched TensorFlow decoding of the records' image and mask bytes.

Shared by the transform graph (:mod:`beam_etl.loader.transform_graph`) and the loader
(:mod:`beam_etl.loader.dataset`), so both see exactly the same pixels. ``image_info`` is the
manifest's ``image`` entry: height, width, channels, format and mask_format. Every record in
an output has that size and format, so raw bytes decode with one reshape of the whole batch
and the results have static shapes (what TPUs and ``drop_remainder`` batching need).
"""

from __future__ import annotations

import tensorflow as tf


def _decode_each(encoded: tf.Tensor, decode, shape: list[int]) -> tf.Tensor:
    decoded = tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec([None, None, shape[-1]], tf.uint8))
    return tf.ensure_shape(decoded, [None, *shape])


def decode_images(encoded: tf.Tensor, image_info: dict) -> tf.Tensor:
    """``string[B]`` in ``image_info['format']`` -> ``uint8[B, H, W, 3]``."""
    shape = [image_info["height"], image_info["width"], image_info["channels"]]
    image_format = image_info["format"]
    if image_format == "raw":
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1, *shape])
    if image_format == "jpeg":
        return _decode_each(encoded, lambda data: tf.io.decode_jpeg(data, channels=shape[-1]), shape)
    if image_format == "png":
        return _decode_each(encoded, lambda data: tf.io.decode_png(data, channels=shape[-1]), shape)
    raise ValueError(f"unknown image format {image_format!r} in the manifest")


def decode_masks(encoded: tf.Tensor, image_info: dict) -> tf.Tensor:
    """``string[B]`` in ``image_info['mask_format']`` -> ``uint8[B, H, W]`` (label values)."""
    shape = [image_info["height"], image_info["width"]]
    mask_format = image_info["mask_format"]
    if mask_format == "raw":
        return tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [-1, *shape])
    if mask_format == "png":
        return _decode_each(encoded, lambda data: tf.io.decode_png(data, channels=1), [*shape, 1])[..., 0]
    raise ValueError(f"unknown mask format {mask_format!r} in the manifest")
