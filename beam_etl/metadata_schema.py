"""The records' schema as TensorFlow Metadata's ``Schema``, written to
``OUT/metadata/schema.pbtxt``: where ``tft.TFTransformOutput(OUT).raw_feature_spec()``, TFX
trainers and serving code, and data-validation tools (TFDV) look for it.

Every feature is a scalar present in every record; the encoded images and masks are bytes with
an image domain (JPEG, PNG: so validation tools do not take them for text), and the values the
job guarantees are domains: the formats, the size, three channels, labels from -1. Protocol
buffers only: no TensorFlow.
"""

from __future__ import annotations

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_etl import schema

_TYPES = {"string": schema_pb2.BYTES, "int64": schema_pb2.INT}


def _int_domain(feature, low: int, high: int | None = None) -> None:
    feature.int_domain.min = low
    if high is not None:
        feature.int_domain.max = high


def records_schema(image_info: dict, mask_values: tuple[int, ...] | None = None) -> schema_pb2.Schema:
    """The schema of the records of an output whose manifest's ``image`` entry is ``image_info``
    (size and formats), with ``--mask_values`` (None: any) noted on the mask."""
    result = schema_pb2.Schema()
    features = {}
    for key, (dtype, description) in schema.FEATURES.items():
        feature = result.feature.add(name=key, type=_TYPES[dtype])
        feature.presence.min_fraction = 1.0
        feature.shape.SetInParent()  # a scalar, as tf.io.FixedLenFeature([])
        feature.annotation.comment.append(description)
        features[key] = feature
    for key, encoding in ((schema.IMAGE_ENCODED, image_info["format"]),
                          (schema.MASK_ENCODED, image_info["mask_format"])):
        if encoding in ("jpeg", "png"):
            features[key].image_domain.SetInParent()
    features[schema.IMAGE_FORMAT].string_domain.value.append(image_info["format"])
    features[schema.MASK_FORMAT].string_domain.value.append(image_info["mask_format"])
    _int_domain(features[schema.IMAGE_HEIGHT], image_info["height"], image_info["height"])
    _int_domain(features[schema.IMAGE_WIDTH], image_info["width"], image_info["width"])
    _int_domain(features[schema.IMAGE_CHANNELS], image_info["channels"], image_info["channels"])
    _int_domain(features[schema.CLASS_LABEL], -1)
    if mask_values is not None:
        features[schema.MASK_ENCODED].annotation.comment.append(
            f"pixel values: {','.join(str(value) for value in mask_values)} (--mask_values)")
    return result


def records_schema_text(image_info: dict, mask_values: tuple[int, ...] | None = None) -> bytes:
    """:func:`records_schema` in the text format of ``schema.pbtxt``."""
    return text_format.MessageToString(records_schema(image_info, mask_values)).encode("utf-8")
