"""Writers built on GroupByKey, so they behave the same on every runner (Beam's own file
sinks rely on a finalize step that some runners, Dask among them, do not execute).

Shards: each example goes to shard ``stable_hash(example_key) % num_shards`` of its split;
a shard's records are sorted by key; so the same inputs give byte-identical files whatever
the runner, worker count or bundle order. Every file is written under ``.incomplete/`` and
renamed into place once complete.
"""

from __future__ import annotations

import collections
import math

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from beam_etl import tfrecord
from beam_etl.hashing import stable_hash
from beam_etl.records import EncodedExample

INCOMPLETE_DIR = ".incomplete"
REJECTED_DIR = "rejected"
REJECTED_FILE = f"{REJECTED_DIR}/rejected-00000-of-00001.jsonl"
_EMPTY = None  # placeholder value that makes a shard exist even when no example lands in it


def shard_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def join(directory: str, name: str) -> str:
    return FileSystems.join(directory, *name.split("/"))


def write_atomically(output_dir: str, name: str, chunks) -> int:
    """Writes ``chunks`` (bytes) to ``output_dir/name`` through a temporary file; returns bytes."""
    temporary = join(output_dir, f"{INCOMPLETE_DIR}/{name}")
    written = 0
    with FileSystems.create(temporary) as handle:
        for chunk in chunks:
            handle.write(chunk)
            written += len(chunk)
    final = join(output_dir, name)
    parent = FileSystems.split(final)[0]
    if not FileSystems.exists(parent):
        try:
            FileSystems.mkdirs(parent)  # local paths need it; object stores have no directories
        except BeamIOError:
            pass  # created meanwhile by a parallel writer
    if FileSystems.exists(final):  # a retried bundle: the earlier attempt's bytes are identical
        FileSystems.delete([final])
    FileSystems.rename([temporary], [final])
    return written


def _shard_counts_from_bytes(split_bytes, splits, shard_bytes):
    counts = {split: 1 for split in splits}
    for split, total in split_bytes:
        counts[split] = max(1, math.ceil(total / shard_bytes))
    return sorted(counts.items())


def _assign_shard(example: EncodedExample, counts: dict):
    num_shards = counts[example.split]
    shard = stable_hash("shard", example.example_key) % num_shards
    return (example.split, shard, num_shards), (example.example_key, example.copy, example.serialized)


def _placeholders(split_and_count):
    split, num_shards = split_and_count
    for shard in range(num_shards):
        yield (split, shard, num_shards), _EMPTY


class _WriteShardFn(beam.DoFn):
    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, element):
        (split, shard, num_shards), values = element
        records = sorted(value for value in values if value is not _EMPTY)
        name = shard_name(split, shard, num_shards)
        size = write_atomically(self._output_dir, name,
                                (tfrecord.frame(serialized) for _, _, serialized in records))
        yield {
            "split": split,
            "file": name,
            "num_examples": len(records),
            "num_source_examples": sum(1 for _, copy, _ in records if copy == 0),
            "bytes": size,
        }


class WriteShards(beam.PTransform):
    """``EncodedExample`` -> ``OUTPUT/<split>-SSSSS-of-NNNNN.tfrecord``; yields one dict per file.

    With ``num_shards`` every split gets that many files; otherwise each split gets enough
    files for ``shard_bytes`` each (at least one, so an empty split still has a file).
    """

    def __init__(self, output_dir: str, splits: tuple[str, ...], num_shards: int | None,
                 shard_bytes: int):
        super().__init__()
        self._output_dir = output_dir
        self._splits = splits
        self._num_shards = num_shards
        self._shard_bytes = shard_bytes

    def expand(self, examples):
        if self._num_shards:
            counts = examples.pipeline | "ShardCounts" >> beam.Create(
                [(split, self._num_shards) for split in self._splits])
        else:
            counts = (examples
                      | "SizeBySplit" >> beam.Map(lambda e: (e.split, len(e.serialized) + 16))
                      | "SumBySplit" >> beam.CombinePerKey(sum)
                      | "ListSizes" >> beam.combiners.ToList()
                      | "ShardCounts" >> beam.FlatMap(
                          _shard_counts_from_bytes, self._splits, self._shard_bytes))  # (split, n)
        keyed = examples | "AssignShards" >> beam.Map(_assign_shard, beam.pvalue.AsDict(counts))
        empty = counts | "EveryShard" >> beam.FlatMap(_placeholders)
        return ((keyed, empty)
                | "FlattenShards" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()  # ((split, shard, n), [(key, copy, bytes)])
                | "WriteShardFiles" >> beam.ParDo(_WriteShardFn(self._output_dir)))


class _WriteRejectedFn(beam.DoFn):
    def __init__(self, output_dir: str):
        self._output_dir = output_dir

    def process(self, element):
        _, values = element
        rejections = sorted((value for value in values if value is not _EMPTY),
                            key=lambda r: (r.uri, r.stage, r.reason, r.key or ""))
        write_atomically(self._output_dir, REJECTED_FILE,
                         (f"{r.to_json()}\n".encode("utf-8") for r in rejections))
        yield {
            "file": REJECTED_FILE,
            "num_rejected": len(rejections),
            "by_reason": dict(sorted(collections.Counter(r.reason for r in rejections).items())),
            "by_stage": dict(sorted(collections.Counter(r.stage for r in rejections).items())),
        }


class WriteRejected(beam.PTransform):
    """``Rejection`` -> ``OUTPUT/rejected/rejected-00000-of-00001.jsonl`` (sorted, written even
    when empty); yields one summary dict. Rejections are few and small, so one file holds them."""

    def __init__(self, output_dir: str):
        super().__init__()
        self._output_dir = output_dir

    def expand(self, rejections):
        empty = rejections.pipeline | "NoRejection" >> beam.Create([(REJECTED_DIR, _EMPTY)])
        keyed = rejections | "KeyRejections" >> beam.Map(lambda r: (REJECTED_DIR, r))
        return ((keyed, empty)
                | "FlattenRejections" >> beam.Flatten()
                | "GroupRejections" >> beam.GroupByKey()  # ("rejected", [Rejection])
                | "WriteRejectedFile" >> beam.ParDo(_WriteRejectedFn(self._output_dir)))


def remove_incomplete(output_dir: str) -> None:
    path = join(output_dir, INCOMPLETE_DIR)
    if FileSystems.exists(path):
        FileSystems.delete([path])

