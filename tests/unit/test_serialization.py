"""The hand-written Example and TFRecord writers against TensorFlow's own."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from beam_etl import schema, tf_example, tfrecord
from beam_etl.image import encoding
from tests.support.images import gradient


def test_example_bytes_equal_tensorflow_serialization():
    features = {"b": [b"\x00\xff", "text"], "a": 7, "neg": [-1, 2**40], "empty": [],
                "f": [0.5, -2.25], "s": "é"}
    proto = tf.train.Example(features=tf.train.Features(feature={
        "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\x00\xff", b"text"])),
        "a": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
        "neg": tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 2**40])),
        "empty": tf.train.Feature(int64_list=tf.train.Int64List(value=[])),
        "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -2.25])),
        "s": tf.train.Feature(bytes_list=tf.train.BytesList(value=["é".encode()])),
    }))
    assert tf_example.serialize_example(features) == proto.SerializeToString(deterministic=True)


def test_repeated_scalars_serialize_the_same_as_tensorflow_every_time():
    # Scalar entries are cached: the second and third records reuse some and not others.
    for name, label, flag in (("a.jpg", 1, True), ("b.jpg", 1, False), ("a.jpg", 2, True)):
        features = {"name": name, "label": label, "flag": int(flag), "one": 1, "also_one": "1"}
        proto = tf.train.Example(features=tf.train.Features(feature={
            "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[name.encode()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            "flag": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(flag)])),
            "one": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
            "also_one": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"1"])),
        }))
        assert tf_example.serialize_example(features) == proto.SerializeToString(deterministic=True)


def test_schema_example_parses_with_the_schema_spec():
    pixels = gradient(16, 24)
    mask = (np.arange(16 * 24).reshape(16, 24) % 3 + 1).astype(np.uint8)
    serialized = schema.build_example(
        image=encoding.encode_image(pixels, "png"), image_format="png", height=16, width=24,
        filename="gs://b/images/a.jpg", source_id="a#aug1", mask=encoding.encode_mask(mask, "png"),
        mask_format="png", label=-1, label_name="")
    parsed = tf.io.parse_single_example(serialized, schema.feature_spec())
    assert set(parsed) == set(schema.FEATURES)
    assert int(parsed[schema.CLASS_LABEL]) == -1 and int(parsed[schema.IMAGE_CHANNELS]) == 3
    assert parsed[schema.IMAGE_SOURCE_ID].numpy() == b"a#aug1"
    np.testing.assert_array_equal(tf.io.decode_png(parsed[schema.IMAGE_ENCODED]).numpy(), pixels)
    np.testing.assert_array_equal(tf.io.decode_png(parsed[schema.MASK_ENCODED])[:, :, 0].numpy(), mask)


def test_encodings_round_trip():
    pixels = gradient(16, 24)
    mask = (np.arange(16 * 24).reshape(16, 24) % 3).astype(np.uint8)
    raw = encoding.encode_image(pixels, "raw")
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(16, 24, 3), pixels)
    jpeg = np.asarray(Image.open(io.BytesIO(encoding.encode_image(pixels, "jpeg", 95))))
    assert jpeg.shape == (16, 24, 3) and np.abs(jpeg.astype(int) - pixels).mean() < 8
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoding.encode_mask(mask, "png")))), mask)
    assert Image.open(io.BytesIO(encoding.encode_mask(mask, "png"))).mode == "L"
    np.testing.assert_array_equal(np.frombuffer(encoding.encode_mask(mask, "raw"), np.uint8).reshape(16, 24), mask)


def test_tfrecord_framing_reads_back_in_tensorflow(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 50]
    path = tmp_path / "f.tfrecord"
    with open(path, "wb") as handle:
        tfrecord.write_records(handle, records)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == records
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert (tmp_path / "tf.tfrecord").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_encoded_images_keep_the_channel_order_and_any_view(image_format):
    """Red stays red through the encoder (OpenCV's order is BGR), and a flipped or cropped view
    of the pixels encodes as the pixels it shows."""
    red = np.zeros((16, 24, 3), np.uint8)
    red[..., 0] = 200
    decoded = tf.io.decode_image(encoding.encode_image(red, image_format, 95), channels=3).numpy()
    assert np.abs(decoded.astype(int) - red).max() <= 2
    pixels = gradient(32, 40)
    view = pixels[::-1, 3:35]  # negative strides, not contiguous
    decoded = tf.io.decode_image(encoding.encode_image(view, image_format, 100), channels=3).numpy()
    tolerance = 0 if image_format == "png" else 4
    assert np.abs(decoded.astype(int) - view).mean() <= tolerance


def test_mask_png_is_eight_bit_grayscale_and_exact_for_any_view():
    mask = (np.arange(40 * 32).reshape(40, 32) % 7).astype(np.uint8)
    for view in (mask, mask[::-1, ::2], mask[5:9]):
        encoded = encoding.encode_mask(view, "png")
        assert encoded[24:26] == b"\x08\x00"  # IHDR: bit depth 8, colour type 0 (grayscale)
        np.testing.assert_array_equal(tf.io.decode_png(encoded)[:, :, 0].numpy(), view)
