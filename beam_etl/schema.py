"""The record schema: the one place that names the features of a written example.

Keys follow the TF Model Garden / DeepLab segmentation convention, so readers that already
exist for those work on the shards of ``--image_format jpeg`` and ``png``: they decode the
encoded keys with ``tf.io.decode_image`` and never read ``image/format``. Raw records hold bare
pixels, which only readers that read ``image/format``, ``image/height`` and ``image/width`` (this
project's loader) can use. ``OUT/metadata/schema.pbtxt`` states the same schema for tf.Transform,
TFX and TFDV (:mod:`beam_etl.metadata_schema`). The writer builds records with :func:`build_example`;
readers get the parsing spec from :func:`feature_spec` (or from the manifest, which records
:data:`FEATURES`), never by declaring it again.
"""

from __future__ import annotations

from beam_etl import tf_example

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
MASK_ENCODED = "image/segmentation/class/encoded"
MASK_FORMAT = "image/segmentation/class/format"
CLASS_LABEL = "image/class/label"
CLASS_TEXT = "image/class/text"

# key -> (dtype, meaning); every feature is a scalar (FixedLenFeature([])).
FEATURES: dict[str, tuple[str, str]] = {
    IMAGE_ENCODED: ("string", "image bytes in image/format: jpeg, png, or raw uint8 HxWxC row-major"),
    IMAGE_FORMAT: ("string", "jpeg | png | raw"),
    IMAGE_HEIGHT: ("int64", "height in pixels"),
    IMAGE_WIDTH: ("int64", "width in pixels"),
    IMAGE_CHANNELS: ("int64", "3 (RGB)"),
    IMAGE_FILENAME: ("string", "URI of the source image"),
    IMAGE_SOURCE_ID: ("string", "unique example key: source key, plus #aug<k> for augmentation copy k"),
    MASK_ENCODED: ("string", "mask bytes in class/format: single-channel png, or raw uint8 HxW"),
    MASK_FORMAT: ("string", "png | raw"),
    CLASS_LABEL: ("int64", "image-level class id starting at 0 (Oxford CLASS-ID minus 1); -1 if unknown"),
    CLASS_TEXT: ("string", "image-level class name (Oxford breed); empty if unknown"),
}

CHANNELS = 3


def build_example(*, image: bytes, image_format: str, height: int, width: int, filename: str,
                  source_id: str, mask: bytes, mask_format: str, label: int, label_name: str) -> bytes:
    """Serialized ``tf.train.Example`` of one output record."""
    return tf_example.serialize_example({
        IMAGE_ENCODED: image,
        IMAGE_FORMAT: image_format,
        IMAGE_HEIGHT: height,
        IMAGE_WIDTH: width,
        IMAGE_CHANNELS: CHANNELS,
        IMAGE_FILENAME: filename,
        IMAGE_SOURCE_ID: source_id,
        MASK_ENCODED: mask,
        MASK_FORMAT: mask_format,
        CLASS_LABEL: label,
        CLASS_TEXT: label_name,
    })


def feature_spec(features: dict | None = None):
    """``tf.io.parse_example`` spec, from :data:`FEATURES` or a manifest's ``features``."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # only readers need it

    dtypes = {"string": tf.string, "int64": tf.int64}
    features = features or {key: {"dtype": dtype} for key, (dtype, _) in FEATURES.items()}
    return {key: tf.io.FixedLenFeature([], dtypes[value["dtype"]]) for key, value in features.items()}


def describe() -> dict:
    """The schema as the manifest records it."""
    return {key: {"dtype": dtype, "description": text} for key, (dtype, text) in FEATURES.items()}

