"""Where every example came from, and what changed between two outputs. No Beam; TensorFlow only
to read an output that is not local (:func:`read_output`).

``OUT/lineage/<split>-SSSSS-of-NNNNN.jsonl``, beside each shard, holds one JSON line per input
whose original example is in that shard, sorted by key::

    {"key": ..., "split": ..., "image_uri": ..., "mask_uri": ...,
     "image_sha256": ..., "mask_sha256": ...,       the bytes it was made from
     "outcome": ...,                                 the name of its outcome (beam_etl.beam.example_cache):
                                                     its bytes, what its source says of it, the flags
                                                     that shape an example and the chain's code, hashed
     "records_sha256": ...,                          its records, hashed (:func:`records_digest`)
     "examples": [{"key": ..., "shard": ...}, ...]}  its records (the example, augmentation copies)

So two outputs' indexes say which inputs were added, removed (gone from the sources, or rejected
now) and changed (other records: other bytes, metadata, split, or flags or code that shape them
differently), without reading a shard. A setting that made no record differ (``--no_statistics``,
a ``--seed`` with no augmented copies) changes no input; a line written before records were
hashed is compared by its outcome, which also changes with such settings. An index is read
only as the file its manifest describes (bytes, crc32c, entries): an index edited, cut short, or
naming a key twice is no index (:func:`read_listed`), never a list of changes.
A run that replaces a complete output writes ``OUT/lineage/changes.jsonl`` (one ``{"key",
"change"}`` line per added, removed or changed input) and the counts in its manifest;
``python -m beam_etl.diff OLD NEW`` compares any two outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import google_crc32c

from beam_etl import regular_files
from beam_etl.manifest_checks import manifest_problems
from beam_etl.output_layout import (MANIFEST, is_local, join, local_path, missing_manifest, parse_manifest,
                                    refuse_unless_regular)

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One input's line of the index (its records' shards are filled in by the writer)."""

    key: str
    split: str
    image_uri: str
    mask_uri: str | None
    image_sha256: str
    mask_sha256: str
    outcome: str
    records_sha256: str
    example_keys: tuple[str, ...]

    def line(self, shard_of) -> bytes:
        """The index's line; ``shard_of(example_key, split)`` names the shard of each record."""
        described = {**vars(self), "examples": [  # (vars: asdict deep-copies, 15 us an input)
            {"key": key, "shard": shard_of(key, self.split)} for key in self.example_keys]}
        del described["example_keys"]
        return (json.dumps(described, sort_keys=True) + "\n").encode("utf-8")


def records_digest(examples) -> str:
    """The SHA-256 of an input's records (``EncodedExample`` s, the original first): each one's
    split, key and length, then its bytes."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.split, example.example_key, len(example.serialized)]).encode("utf-8"))
        digest.update(example.serialized)
    return digest.hexdigest()


def _differ(old: dict, new: dict) -> bool:
    """Whether an input's records differ between two index lines: by their hashes, or where a
    line was written before records were hashed, by the outcomes' names (which differ whenever
    the records may)."""
    if "records_sha256" in old and "records_sha256" in new:
        return old["records_sha256"] != new["records_sha256"]
    return old["outcome"] != new["outcome"]


def read_index(data: bytes) -> dict[str, dict]:
    """The index in ``data`` (a lineage file's bytes): ``{key: line as a dict}``; ValueError for
    a line that is not an entry, or a key indexed twice."""
    entries = {}
    for number, text in enumerate(data.decode("utf-8").splitlines(), 1):
        try:
            entry = json.loads(text)
            if not (isinstance(entry["key"], str) and isinstance(entry["outcome"], str)
                    and isinstance(entry["examples"], list)
                    and isinstance(entry["image_sha256"], str) and isinstance(entry["mask_sha256"], str)):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"line {number} of the lineage index is not an entry: {text[:80]!r}") from None
        if entry["key"] in entries:
            raise ValueError(f"line {number} of the lineage index names {entry['key']!r} again")
        entries[entry["key"]] = entry
    return entries


def read_listed(data: bytes, name: str, files: dict) -> dict[str, dict]:
    """The index in ``data``, read as the lineage file ``name`` of an output whose manifest lists
    ``files`` (each file's ``bytes``, ``crc32c`` and ``num_records``); ValueError when it is not
    the file the manifest describes (edited, cut short, or not listed)."""
    listed = files.get(name)
    if listed is None:
        raise ValueError(f"{name} is not among the files the manifest describes")
    crc32c = f"{google_crc32c.value(data):08x}"
    if len(data) != listed.get("bytes") or crc32c != listed.get("crc32c"):
        raise ValueError(f"{name} is not the file the manifest describes ({len(data)} bytes, crc32c {crc32c}; "
                         f"the manifest: {listed.get('bytes')} bytes, crc32c {listed.get('crc32c')})")
    index = read_index(data)
    if "num_records" in listed and len(index) != listed["num_records"]:
        raise ValueError(f"{name} holds {len(index)} entries; the manifest says {listed['num_records']}")
    return index


def merge_listed(indexes) -> dict[str, dict]:
    """One index of an output's lineage files' ``indexes``; ValueError for a key in two of them."""
    merged: dict[str, dict] = {}
    for index in indexes:
        twice = merged.keys() & index.keys()
        if twice:
            raise ValueError(f"the lineage index names {sorted(twice)[0]!r} in two files")
        merged.update(index)
    return merged


def read_described(manifest: dict, read) -> dict[str, dict]:
    """The whole lineage index of the output ``manifest`` describes, each file read with
    ``read(name)`` (bytes) and checked against the manifest (:func:`read_listed`,
    :func:`merge_listed`)."""
    files = manifest.get("files", {})
    return merge_listed(read_listed(read(name), name, files) for name in manifest["lineage"]["files"])


@dataclasses.dataclass(frozen=True)
class Changes:
    """Input keys by what happened to them between an older and a newer output."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: int

    def counts(self) -> dict[str, int]:
        return {ADDED: len(self.added), REMOVED: len(self.removed), CHANGED: len(self.changed),
                "unchanged": self.unchanged}

    def keyed(self) -> list[tuple[str, str]]:
        """``(key, change)`` for every added, removed or changed key, sorted by key."""
        return sorted([(key, ADDED) for key in self.added] + [(key, REMOVED) for key in self.removed]
                      + [(key, CHANGED) for key in self.changed])

    def lines(self) -> bytes:
        """``changes.jsonl``: one ``{"change", "key"}`` line per key, sorted by key."""
        return "".join(json.dumps({"change": change, "key": key}, sort_keys=True) + "\n"
                       for key, change in self.keyed()).encode("utf-8")


def compare(old: dict[str, dict], new: dict[str, dict]) -> Changes:
    """What changed from the index ``old`` to ``new`` (each ``{input key: its line}``)."""
    both = old.keys() & new.keys()
    changed = tuple(sorted(key for key in both if _differ(old[key], new[key])))
    return Changes(added=tuple(sorted(new.keys() - old.keys())), removed=tuple(sorted(old.keys() - new.keys())),
                   changed=changed, unchanged=len(both) - len(changed))


def _read(path: str) -> bytes:
    """A file's bytes: a local one read directly, another (``gs://``) through TensorFlow's file systems."""
    if is_local(path):
        return regular_files.read(local_path(path))  # (a FIFO in a file's place is refused, never waited on)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # only for remote outputs

    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(path)
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def read_output(output: str) -> tuple[dict, dict[str, dict]]:
    """``(manifest, lineage index: {input key: its line})`` of the complete output in ``output``."""
    path = join(output, MANIFEST)
    try:
        refuse_unless_regular(path)
        manifest = parse_manifest(_read(path), path)
    except FileNotFoundError:
        raise missing_manifest(path, output) from None
    problems = manifest_problems(manifest)
    if problems:
        raise ValueError(f"{path} says what is not so of an output: {'; '.join(problems)} (edited by hand?)")
    if not manifest.get("lineage"):
        raise ValueError(f"{output} has no lineage index (manifest format {manifest.get('format_version')}; "
                         "outputs have one from format 4): rerun the job to write one")
    return manifest, read_described(manifest, lambda name: _read(join(output, name)))
