"""Readers that nobody on this project wrote, on the job's output: tf.Transform's and TFX's
raw schema, TensorFlow Metadata's schema checked against the records, and Model Garden's way of
decoding (``tf.io.decode_image`` on the encoded keys, never reading ``image/format``)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_etl import schema
from tests.support.jobs import run_job
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jpeg_output(pets_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("jpeg_output")
    return out, run_job(pets_dir, out, "--mask_values", "1,2,3")


def _records(out, manifest):
    return [out / name for split in manifest["splits"].values() for name in split["files"]]


def test_tf_transform_and_a_tfx_trainer_read_the_raw_schema(jpeg_output):
    out, manifest = jpeg_output
    transform_output = tft.TFTransformOutput(str(out))
    raw_spec = transform_output.raw_feature_spec()
    assert raw_spec == schema.feature_spec()
    # A TFX-style input_fn: parse with the raw spec, then the transform layer.
    files = [str(path) for path in _records(out, {"splits": {"train": manifest["splits"]["train"]}})]
    batch = next(iter(tf.data.TFRecordDataset(files).batch(4).map(
        lambda serialized: tf.io.parse_example(serialized, raw_spec))))
    transformed = transform_output.transform_features_layer()(
        {key: batch[key] for key in raw_spec})
    assert transformed["image"].shape == (4, 40, 32, 3) and transformed["image"].dtype == tf.float32
    assert set(np.unique(transformed["mask"].numpy())) <= {0, 1, 2}


def _check_against(schema_proto: schema_pb2.Schema, records: list[dict]) -> int:
    """Checks every parsed record against the schema's domains; returns how many were checked."""
    for record in records:
        for feature in schema_proto.feature:
            value = record[feature.name]
            domain = feature.WhichOneof("domain_info")
            if domain == "int_domain":
                low = feature.int_domain.min if feature.int_domain.HasField("min") else value
                high = feature.int_domain.max if feature.int_domain.HasField("max") else value
                assert low <= value <= high, (feature.name, value)
            elif domain == "string_domain":
                assert value.decode() in feature.string_domain.value, (feature.name, value)
            elif domain == "image_domain":
                image = tf.io.decode_image(value)
                assert image.shape[:2] == (record[schema.IMAGE_HEIGHT], record[schema.IMAGE_WIDTH])
    return len(records)


def _parsed(paths) -> list[dict]:
    spec = schema.feature_spec()
    return [{key: value.numpy() for key, value in tf.io.parse_single_example(serialized, spec).items()}
            for serialized in tf.data.TFRecordDataset([str(path) for path in paths])]


@pytest.mark.parametrize("image_format", ["jpeg", "raw"])
def test_the_metadata_schema_describes_the_records(jpeg_output, raw_output, image_format):
    out, manifest = jpeg_output if image_format == "jpeg" else raw_output
    schema_proto = text_format.Parse((out / "metadata" / "schema.pbtxt").read_text(), schema_pb2.Schema())
    assert {feature.name for feature in schema_proto.feature} == set(schema.FEATURES)
    by_name = {feature.name: feature for feature in schema_proto.feature}
    encoded = by_name[schema.IMAGE_ENCODED]
    assert encoded.type == schema_pb2.BYTES
    assert encoded.HasField("image_domain") == (image_format == "jpeg")  # raw bytes are no image file
    assert by_name[schema.MASK_ENCODED].HasField("image_domain") == (image_format == "jpeg")
    assert list(by_name[schema.IMAGE_FORMAT].string_domain.value) == [image_format]
    assert (by_name[schema.IMAGE_HEIGHT].int_domain.min, by_name[schema.IMAGE_HEIGHT].int_domain.max) == (40, 40)
    assert "1,2,3" in " ".join(by_name[schema.MASK_ENCODED].annotation.comment)
    checked = _check_against(schema_proto, _parsed(_records(out, manifest)))
    assert checked == manifest["num_examples"] > 0
    assert manifest["files"]["metadata/schema.pbtxt"]["bytes"] == (out / "metadata" / "schema.pbtxt").stat().st_size


def test_a_model_garden_style_decoder_reads_jpeg_and_png_records(pets_dir, jpeg_output, tmp_path):
    # TF Model Garden's segmentation Decoder reads only the encoded keys and decodes with
    # tf.io.decode_image: it never reads image/format.
    keys = {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
            schema.MASK_ENCODED: tf.io.FixedLenFeature((), tf.string)}
    png_out = tmp_path / "png"
    outputs = [jpeg_output, (png_out, run_job(pets_dir, png_out, "--image_format", "png", "--no_statistics"))]
    for out, manifest in outputs:
        paths = _records(out, manifest)
        ours = read_examples(paths)
        theirs = []
        for serialized in tf.data.TFRecordDataset([str(path) for path in paths]):
            parsed = tf.io.parse_single_example(serialized, keys)
            theirs.append((tf.io.decode_image(parsed[schema.IMAGE_ENCODED], channels=3).numpy(),
                           tf.io.decode_image(parsed[schema.MASK_ENCODED], channels=1).numpy()[:, :, 0]))
        assert len(theirs) == len(ours) == manifest["num_examples"]
        for (image, mask), example in zip(theirs, ours):
            np.testing.assert_array_equal(image, example["image"])
            np.testing.assert_array_equal(mask, example["mask"])


def test_raw_records_are_not_for_decode_image_readers(raw_output):
    # The limit the README states: --image_format raw holds bare pixels, which decode_image
    # cannot read; readers that never look at image/format need jpeg or png.
    out, manifest = raw_output
    (serialized,) = tf.data.TFRecordDataset([str(_records(out, manifest)[0])]).take(1)
    parsed = tf.io.parse_single_example(serialized, {schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string)})
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        tf.io.decode_image(parsed[schema.IMAGE_ENCODED])


def test_each_shard_has_the_record_index_dali_reads(jpeg_output):
    # NVIDIA DALI's TFRecord reader shards a file across GPUs by its index: one
    # "offset size" line per record, size covering the record's whole framing.
    out, manifest = jpeg_output
    for path in _records(out, manifest):
        data = path.read_bytes()
        index = (out / f"{path.name}.idx").read_text().splitlines()
        assert manifest["files"][f"{path.name}.idx"]["num_records"] == len(index) == manifest["files"][path.name]["num_examples"]
        keys, end = [], 0
        for line in index:
            offset, size = map(int, line.split())
            assert offset == end  # records follow one another, from the first byte
            (length,) = np.frombuffer(data[offset:offset + 8], "<u8")
            assert size == 8 + 4 + int(length) + 4
            example = tf.train.Example.FromString(data[offset + 12:offset + 12 + int(length)])
            keys.append(example.features.feature[schema.IMAGE_SOURCE_ID].bytes_list.value[0].decode())
            end = offset + size
        assert end == len(data)
        assert keys == [example["key"] for example in read_examples([path])]


def test_verify_names_an_index_that_lost_a_line(jpeg_output, tmp_path):
    import shutil

    from beam_etl.loader import verify

    out, manifest = jpeg_output
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = next(name for name, entry in manifest["files"].items() if entry.get("num_examples", 0) > 1)
    index = copy / f"{shard}.idx"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:-1]))
    assert verify.verify(str(copy)).keys() == {f"{shard}.idx"}
