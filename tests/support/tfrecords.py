"""Reads shards back with TensorFlow itself, the way a trainer would."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from beam_etl import schema


def read_examples(paths) -> list[dict]:
    """Every record in ``paths``, parsed with the schema's spec, decoded to numpy."""
    spec = schema.feature_spec()
    out = []
    for serialized in tf.data.TFRecordDataset([str(p) for p in paths]):
        features = tf.io.parse_single_example(serialized, spec)
        height, width = int(features[schema.IMAGE_HEIGHT]), int(features[schema.IMAGE_WIDTH])
        if features[schema.IMAGE_FORMAT].numpy() == b"raw":
            image = tf.reshape(tf.io.decode_raw(features[schema.IMAGE_ENCODED], tf.uint8), [height, width, 3])
        else:
            image = tf.io.decode_image(features[schema.IMAGE_ENCODED], channels=3)
        if features[schema.MASK_FORMAT].numpy() == b"raw":
            mask = tf.reshape(tf.io.decode_raw(features[schema.MASK_ENCODED], tf.uint8), [height, width])
        else:
            mask = tf.io.decode_png(features[schema.MASK_ENCODED], channels=1)[:, :, 0]
        out.append({
            "key": features[schema.IMAGE_SOURCE_ID].numpy().decode(),
            "filename": features[schema.IMAGE_FILENAME].numpy().decode(),
            "label": int(features[schema.CLASS_LABEL]),
            "label_name": features[schema.CLASS_TEXT].numpy().decode(),
            "image": image.numpy(),
            "mask": mask.numpy(),
            "height": height,
            "width": width,
        })
    return out


def mask_values(examples) -> set[int]:
    return set(np.unique(np.concatenate([e["mask"].ravel() for e in examples])).tolist())
