"""Readers that nobody on this project wrote, on the job's output: tf.Transform's and TFX's
raw schema, TensorFlow Metadata's schema checked against the records, and Model Garden's way of
decoding (``tf.io.decode_image`` on the encoded keys, never reading ``image/format``)."""

from __future__ import annotations

import json
import re
import shutil

import google_crc32c
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from beam_etl import loader, schema
from beam_etl.loader import verification
from beam_etl.loader.listed_files import record_spans
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
        assert (manifest["files"][f"{path.name}.idx"]["num_records"] == len(index)
                == manifest["files"][path.name]["num_examples"])
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
    out, manifest = jpeg_output
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shard = next(name for name, entry in manifest["files"].items() if entry.get("num_examples", 0) > 1)
    index = copy / f"{shard}.idx"
    index.write_text("".join(index.read_text().splitlines(keepends=True)[:-1]))
    assert verification.verify(str(copy)).keys() == {f"{shard}.idx"}


# What a hostile user does to an output: a record copied into a shard, and the counts and checksums
# of every file it touched edited to match, in the manifest and in as many files beside it as
# they care to. Each file that counts or names the shard's records must still tell.


def _copy(output, tmp_path):
    out, _ = output
    shutil.copytree(out, tmp_path / "copy")
    return tmp_path / "copy", json.loads((tmp_path / "copy" / "manifest.json").read_text())


def _framed(data: bytes) -> list[bytes]:
    return [data[offset:offset + size] for offset, size in record_spans(data)]


def _relisted(copy, manifest, *names):
    """Writes ``manifest`` with the entries of ``names`` made to match their files (size, crc32c)."""
    for name in names:
        data = (copy / name).read_bytes()
        manifest["files"][name].update(bytes=len(data), crc32c=f"{google_crc32c.value(data):08x}")
    (copy / "manifest.json").write_text(json.dumps(manifest))


def _key(record: bytes) -> str:
    example = tf.train.Example.FromString(record[12:-4])
    return example.features.feature[schema.IMAGE_SOURCE_ID].bytes_list.value[0].decode()


def _lineage_line(copy, manifest, example_key):
    """``(lineage file, line number, line)`` of the input one of whose examples is ``example_key``."""
    for name in manifest["lineage"]["files"]:
        for number, line in enumerate((copy / name).read_text().splitlines()):
            entry = json.loads(line)
            if any(example["key"] == example_key for example in entry["examples"]):
                return name, number, entry
    raise AssertionError(example_key)


def _copied_record(copy, manifest, forged):
    """A shard's first record copied to its end; the manifest's counts of it edited to match, and
    ``forged`` files beside it too ("index": a line for it; "lineage": it named again, or under
    a new key); returns ``(shard, its records before, the copied record's key)``."""
    shard = next(name for name in manifest["splits"]["train"]["files"] if manifest["files"][name]["num_examples"])
    records = _framed((copy / shard).read_bytes())
    (copy / shard).write_bytes(b"".join(records + records[:1]))
    manifest["files"][shard]["num_examples"] += 1
    for counts in (manifest["splits"]["train"], manifest):
        counts["num_examples"] += 1
    manifest["splits"]["train"]["bytes"] += len(records[0])
    edited = [shard]
    if forged != "counts":
        index = copy / f"{shard}.idx"
        index.write_text(index.read_text() + f"{sum(map(len, records))} {len(records[0])}\n")
        manifest["files"][f"{shard}.idx"]["num_records"] += 1
        edited.append(f"{shard}.idx")
    key = _key(records[0])
    if forged.startswith("lineage"):
        name, number, entry = _lineage_line(copy, manifest, key)
        entry["examples"].append({"key": key if forged == "lineage" else f"{key}#aug9", "shard": shard})
        lines = (copy / name).read_text().splitlines(keepends=True)
        lines[number] = json.dumps(entry, sort_keys=True) + "\n"
        (copy / name).write_text("".join(lines))
        edited.append(name)
    _relisted(copy, manifest, *edited)
    return shard, len(records), key


def test_verify_names_a_shard_with_a_record_copied_in_and_every_count_of_it_edited_to_match(raw_output, tmp_path):
    """The manifest alone gives it away (its shard's record index is listed with a record less):
    the loader refuses it too, before reading a record."""
    copy, manifest = _copy(raw_output, tmp_path)
    shard, records, _ = _copied_record(copy, manifest, "counts")
    said = (f"the shard {shard!r} is listed with {records + 1} records, and its record index "
            f"'{shard}.idx' with {records}")
    assert verification.verify(str(copy)) == {"manifest.json": said}
    with pytest.raises(loader.OutputMismatchError, match=re.escape(f"manifest.json: {said}")):
        loader.make_dataset(str(copy), "train", 4)


@pytest.mark.parametrize("forged", ["index", "lineage", "lineage, a new key"])
def test_verify_names_a_record_copied_in_whatever_files_beside_it_were_edited_to_match(raw_output, tmp_path,
                                                                                     forged):
    """Its record index forged too: the lineage index still names one record less in the shard.
    The lineage forged as well: it names an example twice, or a key no record has; the shard
    holds two records of one key."""
    copy, manifest = _copy(raw_output, tmp_path)
    shard, records, key = _copied_record(copy, manifest, forged)
    problems = verification.verify(str(copy))
    if forged == "index":
        assert problems == {shard: f"holds {records + 1} records; the lineage index names {records} in it "
                                   f"(2 records of key {key!r}, named 1)"}
    elif forged == "lineage":
        name, _, _ = _lineage_line(copy, manifest, key)
        assert problems == {name: f"names the example {key!r} twice",
                            shard: f"holds 2 records of key {key!r}: a key is one example's"}
    else:
        assert problems == {shard: f"holds 2 records of key {key!r}; the lineage index names 1 in it"}


def test_verify_names_a_record_index_whose_lines_are_not_its_shard_s_records(raw_output, tmp_path):
    """As many lines as records, the right total, two lines swapped: DALI would read each record
    at another's offset."""
    copy, manifest = _copy(raw_output, tmp_path)
    shard = next(name for name in manifest["splits"]["train"]["files"] if manifest["files"][name]["num_examples"] > 1)
    index = copy / f"{shard}.idx"
    lines = index.read_text().splitlines(keepends=True)
    assert lines[0] != lines[1]
    index.write_text("".join([lines[1], lines[0], *lines[2:]]))
    _relisted(copy, manifest, f"{shard}.idx")
    (offset, size), (other, other_size) = (map(int, line.split()) for line in lines[:2])
    assert verification.verify(str(copy)) == {shard: f"its record 1 is at offset {offset}, of {size} bytes; its record "
                                               f"index {shard}.idx says offset {other}, of {other_size} bytes"}


def _lowered(manifest, version):
    """``manifest`` as a job of format ``version`` wrote it, but for the files beside it: without
    the keys and files the later formats added."""
    manifest["format_version"] = version
    for key in ("lineage", "changes", *(("run_id", "statistics_absent", "files") if version < 2 else ())):
        manifest.pop(key, None)
    for key in ("use_cache", "cache_dir", "resize") if version < 3 else ("resize",):  # (the cache: from 3 on)
        manifest["flags"].pop(key)
    for key in ("resize", "mask_ignore_value"):
        manifest["image"].pop(key, None)
    for name in list(manifest.get("files", ())):
        if name.startswith("lineage/") or (version < 3 and (name.endswith(".idx") or name.startswith("metadata/"))):
            del manifest["files"][name]


@pytest.mark.parametrize("version", [3, 2])
def test_a_manifest_whose_format_was_lowered_is_refused(raw_output, tmp_path, version):
    """Lowered with the later format's files taken out of its list: its flags still hold what only
    a later format's job wrote, which the loader refuses too; with those taken out as well, the
    later format's files beside the shards, which no job of its format wrote, are named; with
    those gone, it is an output as that format's job wrote it (format 3's: with the cache's flags)."""
    copy, manifest = _copy(raw_output, tmp_path)
    _lowered(manifest, version)
    flag, first = ("resize", 4) if version == 3 else ("use_cache", 3)
    with_flags = {**manifest, "flags": {**manifest["flags"], flag: raw_output[1]["flags"][flag]}}
    (copy / "manifest.json").write_text(json.dumps(with_flags))
    said = f"it holds 'flags.{flag}', which no manifest of format_version {version} has (from {first} on)"
    assert verification.verify(str(copy)) == {"manifest.json": said}
    with pytest.raises(loader.OutputMismatchError, match=re.escape(said)):
        loader.make_dataset(str(copy), "train", 4)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    later = [name for name in raw_output[1]["files"] if name not in manifest["files"]]
    assert later and all(name.startswith("lineage/") or version < 3 for name in later)
    assert verification.verify(str(copy)) == {
        name: f"a file of format {4 if name.startswith('lineage/') else 3} on, beside a manifest of format_version "
              f"{version}, whose job never wrote it (its format lowered by hand?)" for name in later}
    for name in later:
        (copy / name).unlink()
    assert verification.verify(str(copy)) == {}  # (an output as that format's job wrote it)


def test_verify_names_a_record_copied_into_a_shard_of_an_output_without_a_lineage_index(raw_output, tmp_path):
    """Format 3 had no lineage index: a shard's records are their keys' only ones."""
    copy, manifest = _copy(raw_output, tmp_path)
    shard, _, key = _copied_record(copy, manifest, "index")
    _lowered(manifest, 3)
    shutil.rmtree(copy / "lineage")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verification.verify(str(copy)) == {shard: f"holds 2 records of key {key!r}: a key is one example's"}


def _moved_source_example(manifest):
    manifest["splits"]["train"]["num_source_examples"] -= 1
    manifest["splits"]["test"]["num_source_examples"] += 1


def _one_rejection_more_by_reason(manifest):
    reason = sorted(manifest["rejected"]["by_reason"])[0]
    manifest["rejected"]["by_reason"][reason] += 1


def _uncounted_shard(manifest):
    """A shard's count taken out, and the split's and the output's lowered by it: nothing else
    would count its records."""
    count = manifest["files"][manifest["splits"]["train"]["files"][0]].pop("num_examples")
    for counts in (manifest["splits"]["train"], manifest):
        counts["num_examples"] -= count


@pytest.mark.parametrize("edit, said", [
    (lambda m: m["splits"]["train"].update(bytes=m["splits"]["train"]["bytes"] + 1),
     "split 'train': its files hold {train_bytes} bytes, its bytes says {train_bytes_plus_one}"),
    (_moved_source_example,
     "split 'test': its lineage files are listed with {test_sources} inputs, its num_source_examples says "
     "{test_sources_plus_one}"),
    (_one_rejection_more_by_reason,
     "rejected.by_reason counts {rejected_plus_one} rejections, and rejected.num_rejected says {rejected}"),
    (_uncounted_shard, "files.{first_train_shard}: its 'num_examples' is not a count"),
    (lambda m: m["files"].pop(m["lineage"]["files"][0]),  # (its counts not read: they are not there)
     "the lineage file {first_lineage_file!r} is not among the listed files"),
])
def test_a_manifest_whose_counts_of_the_same_files_disagree_is_refused(raw_output, tmp_path, edit, said):
    copy, manifest = _copy(raw_output, tmp_path)
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    said = said.format(train_bytes=train["bytes"], train_bytes_plus_one=train["bytes"] + 1,
                       test_sources=test["num_source_examples"], test_sources_plus_one=test["num_source_examples"] + 1,
                       rejected=manifest["num_rejected"], rejected_plus_one=manifest["num_rejected"] + 1,
                       first_train_shard=train["files"][0], first_lineage_file=manifest["lineage"]["files"][0])
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert said in verification.verify(str(copy))["manifest.json"].split("; ")
    with pytest.raises(loader.OutputMismatchError, match=re.escape(said)):
        loader.make_dataset(str(copy), "train", 4)


def test_verify_names_a_rejected_list_whose_reasons_are_not_the_manifest_s(raw_output, tmp_path):
    copy, manifest = _copy(raw_output, tmp_path)
    name = manifest["rejected"]["file"]
    lines = [json.loads(line) for line in (copy / name).read_text().splitlines()]
    was, now = lines[0]["reason"], next(reason for reason in manifest["rejected"]["by_reason"]
                                        if reason != lines[0]["reason"])
    lines[0]["reason"] = now
    (copy / name).write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    _relisted(copy, manifest, name)
    first = min(was, now)
    held = sum(line["reason"] == first for line in lines)
    assert verification.verify(str(copy)) == {name: f"holds {held} rejection(s) of reason {first!r}; the manifest's "
                                              f"rejected.by_reason says {manifest['rejected']['by_reason'][first]}"}


def test_verify_names_a_list_of_changes_that_the_counts_or_the_lineage_index_contradict(pets_dir, raw_output,
                                                                                        tmp_path):
    copy, _ = _copy(raw_output, tmp_path)
    manifest = run_job(pets_dir, copy, "--image_format", "raw", "--augment_copies", "2", "--mask_values", "1,2,3",
                       "--seed", "5", "--overwrite")  # (other copies of the training split's inputs: changed)
    name = manifest["changes"]["file"]
    assert manifest["changes"]["changed"] > 0 and verification.verify(str(copy)) == {}
    lines = [json.loads(line) for line in (copy / name).read_text().splitlines()]
    assert lines[0]["change"] == "changed"
    lines[0]["change"] = "removed"  # (a key the lineage index still indexes)
    (copy / name).write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    _relisted(copy, manifest, name)
    changed = manifest["changes"]["changed"]
    assert verification.verify(str(copy)) == {name: f"holds {changed - 1} key(s) changed; the manifest's changes.changed "
                                              f"says {changed}"}
    manifest["changes"].update(removed=1, changed=manifest["changes"]["changed"] - 1)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verification.verify(str(copy)) == {"manifest.json": (
        f"changes count {manifest['num_written'] - 1} inputs written (added, changed, unchanged), and num_written "
        f"says {manifest['num_written']}")}
    manifest["changes"]["unchanged"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert verification.verify(str(copy)) == {name: f"says {lines[0]['key']!r} was removed, and the lineage index indexes it"}
