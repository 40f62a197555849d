import json

import apache_beam as beam
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl.records import EncodedExample, Rejection
from beam_etl.sink import WriteRejected, WriteShards


def _examples(n, split="train"):
    return [EncodedExample(example_key=f"k{i:03d}", source_key=f"k{i:03d}", split=split, copy=0,
                           serialized=f"payload-{i}".encode()) for i in range(n)]


def _records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_fixed_shards_hold_every_example_sorted_and_empty_splits_get_files(tmp_path):
    with TestPipeline() as p:
        reports = (p | beam.Create(_examples(40))
                   | WriteShards(str(tmp_path), ("train", "test"), num_shards=3, shard_bytes=1 << 20))
        assert_that(reports | beam.Map(lambda r: (r["file"], r["split"])), equal_to([
            ("train-00000-of-00003.tfrecord", "train"), ("train-00001-of-00003.tfrecord", "train"),
            ("train-00002-of-00003.tfrecord", "train"), ("test-00000-of-00003.tfrecord", "test"),
            ("test-00001-of-00003.tfrecord", "test"), ("test-00002-of-00003.tfrecord", "test")]))
    everything = []
    for shard in range(3):
        records = _records(tmp_path / f"train-{shard:05d}-of-00003.tfrecord")
        assert records == sorted(records, key=lambda r: int(r.split(b"-")[1]))  # sorted by key
        assert 0 < len(records) < 40
        everything += records
    assert sorted(everything) == sorted(f"payload-{i}".encode() for i in range(40))
    assert _records(tmp_path / "test-00000-of-00003.tfrecord") == []
    assert not (tmp_path / ".incomplete" / "train-00000-of-00003.tfrecord").exists()


def test_shard_count_follows_the_target_size(tmp_path):
    # 40 records of ~10 bytes + 16 bytes framing = ~1 KB; 300-byte target -> 4 files.
    with TestPipeline() as p:
        reports = (p | beam.Create(_examples(40))
                   | WriteShards(str(tmp_path), ("train",), num_shards=None, shard_bytes=300))
        assert_that(reports | beam.Map(lambda r: r["file"]),
                    equal_to([f"train-{i:05d}-of-00004.tfrecord" for i in range(4)]))


def test_rejected_list_is_written_sorted_and_even_when_empty(tmp_path):
    rejections = [Rejection(uri=f"/d/{name}", stage="decode_image", reason=reason, message="m", key=name)
                  for name, reason in (("b", "truncated"), ("a", "empty_file"), ("c", "truncated"))]
    with TestPipeline() as p:
        report = p | beam.Create(rejections) | WriteRejected(str(tmp_path / "some"))
        assert_that(report | beam.Map(lambda r: (r["num_rejected"], r["by_reason"])),
                    equal_to([(3, {"empty_file": 1, "truncated": 2})]))
    lines = (tmp_path / "some" / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()
    assert [json.loads(line)["uri"] for line in lines] == ["/d/a", "/d/b", "/d/c"]
    with TestPipeline() as p:
        _ = p | beam.Create([], reshuffle=False).with_output_types(Rejection) | WriteRejected(str(tmp_path / "none"))
    assert (tmp_path / "none" / "rejected" / "rejected-00000-of-00001.jsonl").read_text() == ""
