import errno
import dataclasses
import json
import pickle

import apache_beam as beam
import google_crc32c
import pytest
import tensorflow as tf
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_etl import lineage
from beam_etl.beam.sources import oxford
from beam_etl.config import JobConfig
from beam_etl.elements import EncodedExample, Rejection, SourceRecord
from beam_etl.beam import sink
from beam_etl.beam.sink import ShardCounts, WriteRejected, WriteShards, expected_record_bytes
from beam_etl.output_layout import shard_name

RUN = "0f1e2d3c"  # the run that stages the files (its lease is not needed to stage them)


def _examples(n, split="train"):
    return [EncodedExample(example_key=f"k{i:03d}", split=split, copy=0,
                           serialized=f"payload-{i}".encode()) for i in range(n)]


def _records(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def _file_entry(path):
    data = path.read_bytes()
    return {"bytes": len(data), "crc32c": google_crc32c.Checksum(data).hexdigest().decode()}


def test_fixed_shards_hold_every_example_sorted_and_empty_splits_get_files(tmp_path):
    staged = tmp_path / ".incomplete" / "staged" / RUN  # the commit moves them into place
    with TestPipeline(runner=FnApiRunner()) as p:
        counts = p | "Counts" >> beam.Create([("train", 3), ("test", 3)])
        reports, lineage = p | beam.Create(_examples(40)) | WriteShards(str(tmp_path), RUN, counts)
        assert_that(lineage | beam.Map(lambda r: (r["file"], r["num_records"])), equal_to(
            [(f"lineage/{split}-{shard:05d}-of-00003.jsonl", 0) for split in ("train", "test") for shard in range(3)]),
            label="LineageFiles")  # written even when no example carries an entry
        assert_that(reports | beam.Map(lambda r: (r["file"], r["split"])), equal_to([
            ("train-00000-of-00003.tfrecord", "train"), ("train-00001-of-00003.tfrecord", "train"),
            ("train-00002-of-00003.tfrecord", "train"), ("test-00000-of-00003.tfrecord", "test"),
            ("test-00001-of-00003.tfrecord", "test"), ("test-00002-of-00003.tfrecord", "test")]))
        _ = reports | "KeepReports" >> beam.Map(
            lambda r: (tmp_path / "reports").mkdir(exist_ok=True) or
            (tmp_path / "reports" / r["file"]).write_text(json.dumps(r)))
    everything = []
    for shard in range(3):
        records = _records(staged / f"train-{shard:05d}-of-00003.tfrecord")
        assert records == sorted(records, key=lambda r: int(r.split(b"-")[1]))  # sorted by key
        assert 0 < len(records) < 40
        everything += records
    assert sorted(everything) == sorted(f"payload-{i}".encode() for i in range(40))
    assert _records(staged / "test-00000-of-00003.tfrecord") == []
    for report in (tmp_path / "reports").iterdir():  # size and checksum of what is on disk
        info = json.loads(report.read_text())
        assert {k: info[k] for k in ("bytes", "crc32c")} == _file_entry(staged / info["file"])
        assert info["num_examples"] == len(_records(staged / info["file"]))
    assert not list((tmp_path / ".incomplete" / "tmp").iterdir())  # temporaries renamed
    assert not list(tmp_path.glob("*.tfrecord"))  # nothing in place before the commit
    spilled = list((tmp_path / ".incomplete" / "spill").iterdir())  # removed by the manifest step
    assert spilled and sum(f.stat().st_size for f in spilled) == sum(len(f"payload-{i}") for i in range(40))


def test_each_original_s_lineage_entry_lands_beside_its_shard_with_every_record_s_shard(tmp_path):
    """The entry rides with the original example (spilled after its bytes); copies carry none."""
    def entry(key):
        return lineage.Entry(key=key, split="train", image_uri=f"/i/{key}.jpg", mask_uri=f"/m/{key}.png",
                             image_sha256="a" * 64, mask_sha256="b" * 64, outcome="c" * 64, records_sha256="d" * 64,
                             example_keys=(key, f"{key}#aug1"))

    examples = []
    for i in range(30):
        key = f"k{i:03d}"
        examples.append(EncodedExample(example_key=key, split="train", copy=0, serialized=f"o-{i}".encode(),
                                       lineage=entry(key)))
        examples.append(EncodedExample(example_key=f"{key}#aug1", split="train", copy=1,
                                       serialized=f"c-{i}".encode()))
    with TestPipeline(runner=FnApiRunner()) as p:
        counts = p | "Counts" >> beam.Create([("train", 4), ("val", 1), ("test", 1)])
        _ = p | beam.Create(examples) | WriteShards(str(tmp_path), RUN, counts)
    staged = tmp_path / ".incomplete" / "staged" / RUN
    seen = []
    for shard in range(4):
        name = f"train-{shard:05d}-of-00004"
        lines = [json.loads(line) for line in (staged / "lineage" / f"{name}.jsonl").read_text().splitlines()]
        keys = [line["key"] for line in lines]
        assert keys == sorted(keys)
        originals = {r.decode() for r in _records(staged / f"{name}.tfrecord") if r.startswith(b"o-")}
        assert {f"o-{int(key[1:])}" for key in keys} == originals  # the lines of the originals in the shard
        for line in lines:
            assert line["image_uri"] == f"/i/{line['key']}.jpg"
            for record in line["examples"]:  # every record named with the shard that holds it
                wanted = f"o-{int(line['key'][1:])}" if record["key"] == line["key"] else f"c-{int(line['key'][1:])}"
                assert wanted.encode() in _records(staged / record["shard"])
        seen += keys
    assert sorted(seen) == [f"k{i:03d}" for i in range(30)]
    assert (staged / "lineage" / "val-00000-of-00001.jsonl").read_text() == ""


def test_shard_counts_from_inputs_and_target_size():
    records = [SourceRecord(key=f"k{i}", image_uri="i", mask_uri="m", split="train") for i in range(100)]
    records += [SourceRecord(key=f"t{i}", image_uri="i", mask_uri="m", split="test") for i in range(10)]
    config = JobConfig(output="o", sources=(oxford.Settings(("r",)),), image_size=(100, 100), image_format="raw",
                       augment_copies=1)
    record_bytes = expected_record_bytes(config)  # 100 * 100 * 4 + 512
    assert record_bytes == 40512
    with TestPipeline(runner=FnApiRunner()) as p:
        counts = p | beam.Create(records) | ShardCounts(config, shard_bytes=1_000_000)
        # train: 100 inputs x 2 copies x 40512 B = 8.1 MB -> 9 files; test 0.4 MB -> 1; val: none -> 1
        assert_that(counts, equal_to([("train", 9), ("test", 1), ("val", 1)]))
    with TestPipeline(runner=FnApiRunner()) as p:
        fixed = p | beam.Create(records) | ShardCounts(dataclasses.replace(config, num_shards=4), 1)
        assert_that(fixed, equal_to([("train", 4), ("val", 4), ("test", 4)]))


def test_a_split_never_gets_more_files_than_shard_names_hold():
    config = JobConfig(output="o", sources=(oxford.Settings(("r",)),), image_size=(100, 100), image_format="raw")
    # 200,000 inputs at a byte a file would be 200,000 files: names have five digits (00000-99999)
    counts = dict(sink._shard_counts([("train", 200_000)], config, shard_bytes=1))
    assert counts["train"] == 99999
    assert shard_name("train", 99998, counts["train"]) == "train-99998-of-99999.tfrecord"


def test_rejected_list_is_written_sorted_and_even_when_empty(tmp_path):
    rejections = [Rejection(uri=f"/d/{name}", stage="decode_image", reason=reason, message="m", key=name)
                  for name, reason in (("b", "truncated"), ("a", "empty_file"), ("c", "truncated"))]
    with TestPipeline(runner=FnApiRunner()) as p:
        report = p | beam.Create(rejections) | WriteRejected(str(tmp_path / "some"), RUN)
        assert_that(report | beam.Map(lambda r: (r["num_rejected"], r["by_reason"])),
                    equal_to([(3, {"empty_file": 1, "truncated": 2})]))
    lines = (tmp_path / "some" / ".incomplete" / "staged" / RUN / "rejected" / "rejected-00000-of-00001.jsonl"
             ).read_text().splitlines()
    assert [json.loads(line)["uri"] for line in lines] == ["/d/a", "/d/b", "/d/c"]
    with TestPipeline(runner=FnApiRunner()) as p:
        none = beam.Create([], reshuffle=False).with_output_types(Rejection)
        _ = p | none | WriteRejected(str(tmp_path / "none"), RUN)
    assert (tmp_path / "none" / ".incomplete" / "staged" / RUN / "rejected" / "rejected-00000-of-00001.jsonl"
            ).read_text() == ""


def test_shard_bytes_come_back_in_key_order_a_bounded_chunk_at_a_time(tmp_path, monkeypatch):
    from beam_etl.beam import sink  # pylint: disable=import-outside-toplevel

    # Two spill files written in bundle order; the shard wants them in key order.
    files = {"a.bin": [("k3", b"three"), ("k0", b"zero")], "b.bin": [("k2", b"two!"), ("k1", b"one")]}
    pointers = []
    for name, entries in files.items():
        offset = 0
        with open(tmp_path / name, "wb") as handle:
            for key, data in entries:
                handle.write(data + key.encode())  # the example, then its (here: fake) lineage entry
                pointers.append((key, 0, str(tmp_path / name), offset, len(data),
                                 str(tmp_path / name), offset + len(data), len(key),
                                 google_crc32c.value(data), google_crc32c.value(key.encode())))
                offset += len(data) + len(key)
    reads = []
    read_spilled = sink._read_spilled
    monkeypatch.setattr(sink, "_read_spilled", lambda chunk: reads.append(len(chunk)) or read_spilled(chunk))
    ordered = list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers)), chunk_bytes=11))
    assert ordered == [(b"zero", b"k0"), (b"one", b"k1"), (b"two!", b"k2"), (b"three", b"k3")]
    assert reads == [2, 2]  # never more than ~11 bytes held: two pointers per chunk


def test_an_example_stored_in_the_cache_is_not_spilled_again_and_reads_back_from_there(tmp_path):
    """Bytes on disk already, in a cache entry (``stored``), are pointed at, not copied: only the
    original's lineage entry goes to the spill file."""
    from beam_etl.beam import example_cache, outcome_store, sink  # pylint: disable=import-outside-toplevel
    from beam_etl.elements import EncodedExample  # pylint: disable=import-outside-toplevel

    store = outcome_store.OutcomeStore(str(tmp_path / "cache"))
    outcome = example_cache.Outcome(examples=(EncodedExample("k", "train", 0, b"original bytes"),
                                              EncodedExample("k#aug1", "train", 1, b"a copy's")))
    location = store.write("ab" * 32, outcome)
    store.close()
    places = outcome_store.example_places(location, outcome)
    line = lineage.Entry(key="k", split="train", image_uri="/i/k.jpg", mask_uri="/m/k.png", image_sha256="a" * 64,
                         mask_sha256="b" * 64, outcome="ab" * 32, records_sha256="d" * 64, example_keys=("k", "k#aug1"))
    spill = sink._SpillFn(str(tmp_path / "out"))
    spill.start_bundle()
    pointers = [pointer for example, place in zip(outcome.examples, places)
                for _, pointer in spill.process(dataclasses.replace(
                    example, stored=place, lineage=line if example.copy == 0 else None))]
    spill.finish_bundle()
    assert {type(pointer) for pointer in pointers} == {tuple}  # (what Beam encodes itself, not pickled)
    spilled = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.bin"))
    assert b"original bytes" not in spilled and b"a copy's" not in spilled and len(spilled) > 0
    read_back = list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers))))
    assert [data for data, _ in read_back] == [b"original bytes", b"a copy's"]
    assert pickle.loads(read_back[0][1]) == line and read_back[1][1] == b""
    (segment,) = (tmp_path / "cache").rglob("*.seg")
    good = segment.read_bytes()
    for damaged in (good.replace(b"a copy's", b"a copy!s"),  # a byte changed after the lookup
                    good[:places[0][1]] + b"    " + good[places[0][1]:]):  # bytes put in before them
        segment.write_bytes(damaged)
        with pytest.raises(IOError, match=f"{segment} no longer holds at offset .* the bytes of 'k"):
            list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers))))
    segment.write_bytes(good)
    assert list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers)))) == read_back
    (spilled_file,) = (tmp_path / "out").rglob("*.bin")  # the lineage entry's file: named when it is at fault
    spilled_file.write_bytes(spilled_file.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IOError, match=f"{spilled_file} no longer holds at offset 0 the bytes of 'k'"):
        list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers))))
    for segment in (tmp_path / "cache").rglob("*.seg"):  # pruned while the run went on
        segment.unlink()
    with pytest.raises(FileNotFoundError, match="the cache's file that holds examples of this run, is gone"):
        list(sink._spilled_in_order(sorted(map(sink.Pointer._make, pointers))))


def test_a_stranger_where_the_job_writes_its_schema_or_an_index_is_refused_at_launch(tmp_path):
    import json

    from beam_etl.beam import commit

    # (an output of the first format: the fewest fields a manifest the readers take has)
    manifest = {"format_version": 1, "splits": {"train": {"files": ["train-00000-of-00001.tfrecord"],
                                                          "num_examples": 0, "num_source_examples": 0}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "train-00000-of-00001.tfrecord").write_bytes(b"")
    commit.check_output(str(tmp_path), overwrite=True)  # an earlier output, as listed: replaceable
    for stranger in ("metadata/schema.pbtxt", "train-00000-of-00001.tfrecord.idx"):
        (tmp_path / stranger).parent.mkdir(exist_ok=True)
        (tmp_path / stranger).write_text("not the job's")
        with pytest.raises(ValueError, match=stranger.replace(".", r"\.")):
            commit.check_output(str(tmp_path), overwrite=True)
        (tmp_path / stranger).unlink()


def test_a_shard_or_spill_write_the_disk_refuses_names_the_file(tmp_path):
    """A full disk (here: a file size limit) fails a write with an error that names no file;
    the job's names the file it was writing, so that the failed run's message says where."""
    from beam_etl.beam import sink  # pylint: disable=import-outside-toplevel
    from beam_etl.elements import EncodedExample  # pylint: disable=import-outside-toplevel
    from tests.support import full_disk  # pylint: disable=import-outside-toplevel

    out = tmp_path / "out"
    with full_disk.files_at_most(4096), pytest.raises(OSError) as refused:
        sink.stage_file(str(out), "run", "train-00000-of-00001.tfrecord", [b"x" * 3000, b"y" * 3000])
    assert refused.value.errno == errno.EFBIG
    name = refused.value.filename
    assert name.startswith(str(out)) and name.endswith("/train-00000-of-00001.tfrecord")

    def failing_read():  # (what a shard is made from: spill files, the cache's segments)
        yield b"x"
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as failed:
        sink.stage_file(str(out), "run", "train-00000-of-00001.tfrecord", failing_read())
    assert failed.value.errno == errno.EIO and failed.value.filename is None  # not blamed on the shard
    spill = sink._SpillFn(str(out))
    spill.start_bundle()
    with full_disk.files_at_most(4096), pytest.raises(OSError) as refused:
        for i in range(3):
            list(spill.process(EncodedExample(f"k{i}", "train", 0, b"z" * 3000)))
        spill.finish_bundle()
    spilled = spill._uri
    assert refused.value.errno == errno.EFBIG and refused.value.filename == spilled
    assert refused.value.filename.startswith(str(out)) and refused.value.filename.endswith(".bin")
