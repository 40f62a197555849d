"""Writers built on GroupByKey, so they behave the same on every runner (Beam's own file
sinks rely on a finalize step that not every runner executes).

Shards: each example goes to shard ``stable_hash("shard", example_key) % num_shards`` of its split;
a shard's records are sorted by key; so the same inputs give byte-identical files whatever
the runner, worker count or bundle order. Every file is written to a temporary name and renamed
into the run's staging folder (``.incomplete/staged/<run id>/``) once complete, with its size and
crc32c; the commit (:mod:`beam_etl.beam.commit`) moves the staged files into ``--output``.

The example bytes never go through the shuffle. The step that makes them appends them to a
spill file of its bundle (``.incomplete/spill/``), unless they are on disk already in the
entry of the cache of outcomes they came from or went to, and passes on only where they are; the
GroupByKey gathers those small pointers by shard, and the shard writer reads the bytes back
in file order, 16 MB of a shard at a time. Shuffling the bytes themselves made the job several times slower than a
hand-written process pool on the DirectRunner, whose shuffle runs in one process, and made
its memory grow with the dataset (BENCHMARKS.md). An original example's line of the lineage
index travels the same way, spilled right after its bytes: the shard writer also writes the
lineage file beside its shard (no grouping of its own, which cost a multi-process run about half a
second at 7,390 inputs). A pointer carries the crc32c of the bytes it points at, taken while they
were in memory: the shard writer checks what it reads back against it, so a cache segment
damaged or appended to while the run goes on (or a spill file) fails the run, naming the file,
rather than put other bytes in a shard.
"""

from __future__ import annotations

import collections
import math
import pickle
import uuid
from typing import NamedTuple

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_etl import metadata_schema, tfrecord
from beam_etl.beam import filesystem
from beam_etl.config import MAX_SHARDS, JobConfig
from beam_etl.hashing import stable_hash
from beam_etl.output_layout import (RAW_SCHEMA, REJECTED_DIR, REJECTED_FILE, SPILL_DIR, TEMPORARY_DIR, index_name, join,
                                    lineage_name, shard_name, staging_dir)
from beam_etl.elements import EncodedExample

_EMPTY = None  # placeholder value that makes a shard exist even when no example lands in it
LINEAGE = "lineage"  # WriteShards' second output: one report per lineage file


def stage_file(output_dir: str, run_id: str, name: str, chunks) -> dict:
    """Writes ``chunks`` (bytes) to ``name`` in run ``run_id``'s staging folder in
    ``output_dir`` (:func:`beam_etl.output_layout.staging_dir`) through a temporary file;
    returns the manifest's entry for it: ``{"bytes": n, "crc32c": "8 hex digits"}``."""
    final = join(output_dir, f"{staging_dir(run_id)}/{name}")
    temporary = join(output_dir, f"{TEMPORARY_DIR}/{uuid.uuid4().hex}")
    checksum = google_crc32c.Checksum()
    written = 0
    filesystem.make_parent(temporary)
    with FileSystems.create(temporary) as handle:
        for chunk in chunks:  # (read from spill files and the cache: an error there is theirs)
            try:
                handle.write(chunk)
            except OSError as error:
                raise filesystem.named(error, final)  # pylint: disable=raise-missing-from  # (its cause is set)
            checksum.update(chunk)
            written += len(chunk)
        with filesystem.naming(final):
            handle.close()  # (its last write: a second close, on leaving, does nothing)
    filesystem.delete_file(final)  # a retried bundle: the earlier attempt's bytes are identical
    filesystem.rename(temporary, final)
    return {"bytes": written, "crc32c": checksum.hexdigest().decode("ascii")}


# Expected bytes per pixel of an encoded record, for choosing shard counts before any image
# is decoded (image + mask; measured on photos at quality 95, rounded up).
_BYTES_PER_PIXEL = {"raw": 4.0, "png": 2.2, "jpeg": 0.8}
_RECORD_OVERHEAD = 512  # keys, filename, framing


def expected_record_bytes(config: JobConfig) -> float:
    height, width = config.image_size
    return height * width * _BYTES_PER_PIXEL[config.image_format] + _RECORD_OVERHEAD


def _shard_counts(split_inputs, config: JobConfig, shard_bytes: int):
    counts = dict.fromkeys(config.splits, 1)
    record_bytes = expected_record_bytes(config)
    for split, inputs in split_inputs:
        examples = inputs * (1 + config.augment_copies if split == "train" else 1)
        # never more files than examples (tiny --shard_size_mb values must not make empty files),
        # nor more than shard names hold (five digits, as --num_shards)
        counts[split] = max(1, min(examples, math.ceil(examples * record_bytes / shard_bytes), MAX_SHARDS))
    return sorted(counts.items())


class ShardCounts(beam.PTransform):
    """``SourceRecord`` (its output split assigned) -> ``(split, num_shards)`` for every split
    of the run.

    With ``--num_shards`` that number; otherwise enough files for ``shard_bytes`` each,
    from the number of inputs per split and the expected size of a record, so that shard
    assignment can start as soon as inputs are listed, before any image is decoded.
    """

    def __init__(self, config: JobConfig, shard_bytes: int):
        super().__init__()
        self._config = config
        self._shard_bytes = shard_bytes

    def expand(self, records):
        config = self._config
        if config.num_shards:
            return records.pipeline | "FixedCounts" >> beam.Create(
                [(split, config.num_shards) for split in config.splits])
        return (records
                | "SplitOf" >> beam.Map(lambda record: (record.split, 1))
                | "CountBySplit" >> beam.CombinePerKey(sum)
                | "ListCounts" >> beam.combiners.ToList()
                | "ChooseCounts" >> beam.FlatMap(_shard_counts, config, self._shard_bytes))  # (split, n)


def _placeholders(split_and_count):
    split, num_shards = split_and_count
    for shard in range(num_shards):
        yield (split, shard, num_shards), _EMPTY


class _SpillFn(beam.DoFn):
    """Appends example bytes (and an original's lineage entry, pickled, right after them) to this
    bundle's spill file; emits ``(split, pointer)``, a pointer being ``(example_key, copy,
    data_uri, data_offset, data_length, lineage_uri, lineage_offset, lineage_length,
    data_crc32c, lineage_crc32c)``, the checksums of the bytes as this step had them. An
    example whose bytes are on disk already, in the cache of outcomes (``example.stored``), is
    not written again: its pointer points there, and only its lineage entry is spilled.

    Pointers are emitted from ``process`` and the file is closed in ``finish_bundle``:
    runners commit a bundle's outputs only once the bundle has finished, and the shard
    writer reads after the GroupByKey, so it never sees a pointer into an open file.

    No side input here: a step with one cannot start before the side input is complete, so
    runners that fuse (the DirectRunner's, Dataflow) would cut the job between the decoding
    step and this one and pass every example's bytes through the shuffle service. The shard
    is chosen afterwards, on the small pointers (:func:`_assign_shard`).
    """

    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def start_bundle(self):
        self._handle = None

    def _spill(self, *parts: bytes) -> tuple[str, int]:
        """Appends ``parts`` to this bundle's spill file; returns where the first begins."""
        if self._handle is None:
            self._uri = join(self._output_dir, f"{SPILL_DIR}/{uuid.uuid4().hex}.bin")
            filesystem.make_parent(self._uri)
            self._handle = FileSystems.create(self._uri)
            self._offset = 0
        offset = self._offset
        for part in parts:
            try:
                self._handle.write(part)
            except OSError as error:
                raise filesystem.named(error, self._uri)  # pylint: disable=raise-missing-from  # (its cause is set)
            self._offset += len(part)
        return self._uri, offset

    def process(self, example: EncodedExample):
        data = example.serialized
        entry = b"" if example.lineage is None else pickle.dumps(example.lineage, protocol=pickle.HIGHEST_PROTOCOL)
        if example.stored is not None:
            data_uri, data_offset = example.stored
            entry_uri, entry_offset = self._spill(entry) if entry else ("", 0)
        else:
            data_uri, data_offset = self._spill(data, entry)
            entry_uri, entry_offset = data_uri, data_offset + len(data)
        yield example.split, tuple(Pointer(example.example_key, example.copy, data_uri, data_offset, len(data),
                                           entry_uri, entry_offset, len(entry), google_crc32c.value(data),
                                           google_crc32c.value(entry)))

    def finish_bundle(self):
        if self._handle is not None:
            with filesystem.naming(self._uri):
                self._handle.close()
            self._handle = None


class Pointer(NamedTuple):
    """Where the spill step put an example's bytes and its lineage entry (or found them, in the
    cache's segment), with their crc32c: what crosses the shuffle instead of the bytes. It
    crosses as the plain tuple of these fields (Beam encodes a tuple of strings and numbers
    itself, and would pickle a NamedTuple); a step reads one with ``Pointer._make``. Pointers
    sort by example key first: a shard's records are in key order."""

    key: str
    copy: int
    data_uri: str
    data_offset: int
    data_length: int
    entry_uri: str  # ("" with no entry: an augmented copy's)
    entry_offset: int
    entry_length: int
    data_crc: int
    entry_crc: int


def shard_of(example_key: str, num_shards: int) -> int:
    """The shard an example goes to, whatever the runner: a hash of its key."""
    return stable_hash("shard", example_key) % num_shards


def _assign_shard(element, counts: dict):
    """``(split, pointer)`` -> ``((split, shard, num_shards), pointer)``; a placeholder
    (:func:`_placeholders`) is keyed by its shard already and passes as it is."""
    split, pointer = element
    if pointer is _EMPTY:
        return element
    num_shards = counts[split]
    return (split, shard_of(Pointer._make(pointer).key, num_shards), num_shards), pointer


def _read_spilled(pointers) -> dict[str, tuple[bytes, bytes]]:
    """``{example_key: (example bytes, pickled lineage entry or b"")}``, reading each file
    (spill file, or the cache's segment) once, front to back; raises where what was read is
    not what the pointer's checksum says was put there."""
    by_file = collections.defaultdict(list)
    for pointer in pointers:
        by_file[pointer.data_uri].append((pointer.data_offset, pointer.data_length, pointer.key, 0))
        if pointer.entry_length:
            by_file[pointer.entry_uri].append((pointer.entry_offset, pointer.entry_length, pointer.key, 1))
    parts = {}
    for uri, wanted in sorted(by_file.items()):
        try:
            handle = FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
        except (FileNotFoundError, BeamIOError) as error:
            if f"/{SPILL_DIR}/" in uri:
                raise
            raise FileNotFoundError(f"{uri}, the cache's file that holds examples of this run, is gone (pruned "
                                    f"while the run went on?); nothing was replaced: run again ({error})") from None
        with handle:
            for offset, length, key, part in sorted(wanted):
                handle.seek(offset)
                chunk = handle.read(length)
                if len(chunk) != length:
                    raise IOError(f"{uri} is shorter than expected at offset {offset}")
                parts[key, part] = chunk
    read = {}
    for pointer in pointers:
        data, entry = parts[pointer.key, 0], parts.get((pointer.key, 1), b"")
        for uri, offset, part, checksum in ((pointer.data_uri, pointer.data_offset, data, pointer.data_crc),
                                            (pointer.entry_uri, pointer.entry_offset, entry, pointer.entry_crc)):
            if google_crc32c.value(part) != checksum:
                raise IOError(f"{uri} no longer holds at offset {offset} the bytes of {pointer.key!r} this run put "
                              "or found there (the file changed while the run went on); nothing was replaced: "
                              "run again")
        read[pointer.key] = (data, entry)
    return read


_READ_CHUNK_BYTES = 16 << 20  # 16 MB: how much of a shard the writer holds at once


def _spilled_in_order(pointers, chunk_bytes: int = _READ_CHUNK_BYTES):
    """``(example bytes, pickled lineage entry or b"")`` of ``pointers`` (:class:`Pointer`), in their order,
    holding about ``chunk_bytes`` at a time (not the whole shard): each chunk of consecutive
    pointers reads the spill files it needs once, front to back."""
    chunk, size = [], 0
    for pointer in pointers:
        chunk.append(pointer)
        size += pointer.data_length + pointer.entry_length
        if size >= chunk_bytes:
            data = _read_spilled(chunk)
            yield from (data[pointer.key] for pointer in chunk)
            chunk, size = [], 0
    if chunk:
        data = _read_spilled(chunk)
        yield from (data[pointer.key] for pointer in chunk)


class _WriteShardFn(beam.DoFn):
    """``((split, shard, n), pointers)`` -> the shard, its record index and its lineage file,
    staged; yields the shard's report, and the lineage file's on the :data:`LINEAGE` output."""

    def __init__(self, output_dir: str, run_id: str):
        self._output_dir = output_dir
        self._run_id = run_id

    def process(self, element):
        (split, shard, num_shards), values = element
        pointers = sorted(Pointer._make(value) for value in values if value is not _EMPTY)
        name = shard_name(split, shard, num_shards)
        index = []  # (offset, size) of each framed record: the shard's index, made in this pass
        entries = []  # the lineage entries the originals carried

        def framed():
            offset = 0
            for data, entry in _spilled_in_order(pointers):
                if entry:
                    entries.append(pickle.loads(entry))
                record = tfrecord.frame(data)
                index.append(f"{offset} {len(record)}\n")
                offset += len(record)
                yield record

        written = stage_file(self._output_dir, self._run_id, name, framed())
        index_written = stage_file(self._output_dir, self._run_id, index_name(name), ["".join(index).encode("ascii")])
        yield {
            "split": split,
            "file": name,
            "num_examples": len(pointers),
            "num_source_examples": sum(1 for pointer in pointers if pointer.copy == 0),
            **written,
            "index": {"file": index_name(name), **index_written},
        }
        yield beam.pvalue.TaggedOutput(LINEAGE, self._stage_lineage(name, split, num_shards, entries))

    def _stage_lineage(self, name: str, split: str, num_shards: int, entries) -> dict:
        """``OUTPUT/lineage/<shard's name>.jsonl``: the lines of the inputs whose original is in
        the shard, sorted by key, every record's shard named; written even when empty."""
        entries.sort(key=lambda entry: entry.key)

        def shard_named(example_key: str, entry_split: str) -> str:
            return shard_name(entry_split, shard_of(example_key, num_shards), num_shards)

        lineage_file = lineage_name(name)
        lines = (entry.line(shard_named) for entry in entries)
        written = stage_file(self._output_dir, self._run_id, lineage_file, lines)
        return {"file": lineage_file, **written, "num_records": len(entries)}


class WriteShards(beam.PTransform):
    """``EncodedExample`` -> ``OUTPUT/<split>-SSSSS-of-NNNNN.tfrecord``, its record index
    (``.tfrecord.idx``: ``offset size`` per record, what NVIDIA DALI's TFRecord reader shards
    by) and its lineage file (``OUTPUT/lineage/<split>-SSSSS-of-NNNNN.jsonl``: the lines the
    originals in the shard carry); returns ``(shards, lineage)``, one report dict per shard
    and one per lineage file.

    ``shard_counts`` is a PCollection of ``(split, num_shards)`` (see :class:`ShardCounts`);
    every shard is written, an empty file where no example landed. The placeholders of every
    shard join the pointers before the shards are assigned: one step then assigns and groups,
    and the pointers cross between a runner's steps once less. Run ``run_id`` stages them.
    """

    def __init__(self, output_dir: str, run_id: str, shard_counts):
        super().__init__()
        self._output_dir = output_dir
        self._run_id = run_id
        self._shard_counts = shard_counts

    def expand(self, examples):
        spilled = examples | "SpillExamples" >> beam.ParDo(_SpillFn(self._output_dir))  # (split, pointer)
        empty = self._shard_counts | "EveryShard" >> beam.FlatMap(_placeholders)  # ((split, shard, n), None)
        written = ((spilled, empty)
                   | "FlattenShards" >> beam.Flatten()
                   | "AssignShards" >> beam.Map(_assign_shard, beam.pvalue.AsDict(self._shard_counts))
                   | "GroupByShard" >> beam.GroupByKey()  # ((split, shard, n), [pointer])
                   | "WriteShardFiles" >> beam.ParDo(_WriteShardFn(self._output_dir, self._run_id)).with_outputs(
                       LINEAGE, main="shards"))
        return written.shards, written[LINEAGE]


class _WriteRejectedFn(beam.DoFn):
    def __init__(self, output_dir: str, run_id: str):
        self._output_dir = output_dir
        self._run_id = run_id

    def process(self, element):
        _, values = element
        rejections = sorted((value for value in values if value is not _EMPTY),
                            key=lambda r: (r.uri, r.stage, r.reason, r.key or ""))
        written = stage_file(self._output_dir, self._run_id, REJECTED_FILE,
                             (f"{r.to_json()}\n".encode("utf-8") for r in rejections))
        yield {
            "file": REJECTED_FILE,
            **written,
            "num_rejected": len(rejections),
            "by_reason": dict(sorted(collections.Counter(r.reason for r in rejections).items())),
            "by_stage": dict(sorted(collections.Counter(r.stage for r in rejections).items())),
        }


class WriteRejected(beam.PTransform):
    """``Rejection`` -> ``OUTPUT/rejected/rejected-00000-of-00001.jsonl`` (sorted, written even
    when empty), staged by run ``run_id``; yields one summary dict. Rejections are few and small,
    so one file holds them."""

    def __init__(self, output_dir: str, run_id: str):
        super().__init__()
        self._output_dir = output_dir
        self._run_id = run_id

    def expand(self, rejections):
        empty = rejections.pipeline | "NoRejection" >> beam.Create([(REJECTED_DIR, _EMPTY)])
        keyed = rejections | "KeyRejections" >> beam.Map(lambda r: (REJECTED_DIR, r))
        return ((keyed, empty)
                | "FlattenRejections" >> beam.Flatten()
                | "GroupRejections" >> beam.GroupByKey()  # ("rejected", [Rejection])
                | "WriteRejectedFile" >> beam.ParDo(_WriteRejectedFn(self._output_dir, self._run_id)))


def _stage_records_schema(_, output_dir: str, run_id: str, image_info: dict, mask_values):
    text = metadata_schema.records_schema_text(image_info, mask_values)
    yield {"file": RAW_SCHEMA, **stage_file(output_dir, run_id, RAW_SCHEMA, [text])}


class WriteRecordsSchema(beam.PTransform):
    """Pipeline start -> ``OUTPUT/metadata/schema.pbtxt`` (:mod:`beam_etl.metadata_schema`)
    staged by run ``run_id``; yields one dict: its file name, bytes and crc32c."""

    def __init__(self, config: JobConfig, run_id: str):
        super().__init__()
        self._config = config
        self._run_id = run_id

    def expand(self, pbegin):
        config = self._config
        return (pbegin
                | "OneSchema" >> beam.Create([None])
                | "StageSchema" >> beam.FlatMap(_stage_records_schema, config.output, self._run_id,
                                                config.image_info(), config.mask_values))
