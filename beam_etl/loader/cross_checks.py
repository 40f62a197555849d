"""What an output's files say of the same records and inputs, held against one another: each
shard's records (their number, and the key each carries in ``image/source_id``), its record
index (the offset and size of each record), the lineage index (the shard of every example of
every input), the rejected list (each rejection's reason and stage) and the list of changes (each
key's change), against one another and against the manifest's counts of them. A shard with a
record copied into it, and every count of it in the manifest edited to match, shows here: the
files beside it still say what it held. So do the files a later format writes beside the shards,
found beside a manifest of an earlier format: its format lowered by hand, to switch their
checks off (:meth:`CrossChecks.beside`).

``verify``, which reads every file whole for its checksum, hands each counted file that matched
its manifest entry to :meth:`CrossChecks.add`, then asks :meth:`CrossChecks.problems`. The
loader reads none of them whole: what it holds of them is what the manifest says of itself
(:mod:`beam_etl.manifest_checks`, which sets the manifest's counts against one another).
"""

from __future__ import annotations

import collections
import json

from tensorflow.core.example import example_pb2

from beam_etl import lineage, schema
from beam_etl.loader.listed_files import record_spans
from beam_etl.manifest_checks import INDEX_FORMAT, LINEAGE_FORMAT
from beam_etl.output_layout import CHANGES_FILE, RAW_SCHEMA, first_format, index_name, lineage_name

_CHANGES = (lineage.ADDED, lineage.REMOVED, lineage.CHANGED)


def _records(count: int) -> str:
    return "1 record" if count == 1 else f"{count} records"


def record_key(record) -> str | None:
    """The example key a record carries (``image/source_id``); None where it is no
    ``tf.train.Example`` with one."""
    try:
        features = example_pb2.Example.FromString(record).features.feature
    except Exception:  # pylint: disable=broad-except  # (protobuf's DecodeError, of no stable module)
        return None
    values = features[schema.IMAGE_SOURCE_ID].bytes_list.value if schema.IMAGE_SOURCE_ID in features else []
    return values[0].decode("utf-8", "replace") if len(values) == 1 else None


def _json_lines(data, text_keys, what: str) -> tuple[list[dict], str | None]:
    """The JSON objects of ``data``, a line each, with text under each of ``text_keys``; or the
    problem with the first line that is not one (``what`` it should be)."""
    objects = []
    for number, line in enumerate(bytes(data).decode("utf-8", "replace").splitlines(), 1):
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        if not (isinstance(value, dict) and all(isinstance(value.get(key), str) for key in text_keys)):
            return objects, f"line {number} is not {what}: {line[:80]!r}"
        objects.append(value)
    return objects, None


class CrossChecks:
    """What the counted files of the output ``manifest`` describes say (:meth:`add`, each file
    once, after it matched its entry), then where two of them disagree (:meth:`problems`)."""

    def __init__(self, manifest: dict):
        self._manifest = manifest
        version = manifest["format_version"]
        self._split_of = {shard: split for split, info in manifest["splits"].items() for shard in info["files"]}
        self._shard_of_index = ({index_name(shard): shard for shard in self._split_of}
                                if version >= INDEX_FORMAT else {})
        self._shard_of_lineage = ({lineage_name(shard): shard for shard in self._split_of}
                                  if version >= LINEAGE_FORMAT and manifest.get("lineage") else {})
        later = {RAW_SCHEMA, CHANGES_FILE, *map(index_name, self._split_of), *map(lineage_name, self._split_of)}
        self._later = {name for name in later if first_format(name) > version}
        changes = manifest.get("changes")
        self._changes_file = changes.get("file") if isinstance(changes, dict) else None
        self._records: dict[str, tuple[list, collections.Counter]] = {}  # shard -> (its spans, its records' keys)
        self._indexed: dict[str, list] = {}  # shard -> the spans its record index lists
        self._named = collections.defaultdict(collections.Counter)  # shard -> the example keys the lineage puts there
        self._indexed_by: dict[str, str] = {}  # input key -> the lineage file that indexes it
        self._example_in: dict[str, str] = {}  # example key -> the lineage file that names it
        self._lineage_read: set[str] = set()
        self._changes: list[dict] | None = None

    def beside(self, name: str) -> str | None:
        """What is wrong with finding ``name``, which the manifest does not list, beside it:
        a file a job of a later format than the manifest's writes for these shards (a record
        index, a lineage file, the records' schema, the changes), which no job of its format
        wrote; None for any other name."""
        if name not in self._later:
            return None
        return (f"a file of format {first_format(name)} on, beside a manifest of format_version "
                f"{self._manifest['format_version']}, whose job never wrote it (its format lowered by hand?)")

    def add(self, name: str, data) -> str | None:
        """Takes the bytes of the listed file ``name``, which matched its manifest entry; returns
        what is wrong with them alone, None if nothing."""
        if name in self._split_of:
            return self._add_shard(name, data)
        if name in self._shard_of_index:
            return self._add_index(name, data)
        if name in self._shard_of_lineage:
            return self._add_lineage(name, data)
        if name == self._manifest["rejected"]["file"]:
            return self._rejected_problem(data)
        if name == self._changes_file:
            return self._add_changes(data)
        return None

    def _add_shard(self, name: str, data) -> str | None:
        spans = record_spans(data)  # (its framing is whole: it matched its checksum and count)
        keys = collections.Counter()
        with memoryview(data) as view:  # (each record's bytes parsed where they lie, not copied)
            for number, (offset, size) in enumerate(spans, 1):
                key = record_key(view[offset + 12:offset + size - 4])
                if key is None:
                    return f"its record {number} is not a tf.train.Example with an {schema.IMAGE_SOURCE_ID}"
                keys[key] += 1
        self._records[name] = (spans, keys)
        return None

    def _add_index(self, name: str, data) -> str | None:
        spans = []
        for number, line in enumerate(bytes(data).decode("ascii", "replace").splitlines(), 1):
            parts = line.split(" ")
            if len(parts) != 2 or not all(part.isdigit() for part in parts):
                return f"line {number} is not a record's offset and size: {line[:80]!r}"
            spans.append((int(parts[0]), int(parts[1])))
        self._indexed[self._shard_of_index[name]] = spans
        return None

    def _add_lineage(self, name: str, data) -> str | None:
        shard = self._shard_of_lineage[name]
        split = self._split_of[shard]
        try:
            index = lineage.read_index(bytes(data))
        except ValueError as error:
            return str(error)
        for key, entry in index.items():
            if key in self._indexed_by:
                return f"indexes the input {key!r}, which {self._indexed_by[key]} indexes too"
            self._indexed_by[key] = name
            if entry.get("split") != split:
                return f"its line of {key!r} is of split {entry.get('split')!r}, beside a shard of split {split!r}"
            for example in entry["examples"]:
                if not (isinstance(example, dict) and isinstance(example.get("key"), str)
                        and isinstance(example.get("shard"), str)):
                    return f"its line of {key!r} lists an example that is not a key and its shard: {example!r:.80}"
                if example["key"] in self._example_in:
                    other = self._example_in[example["key"]]
                    return (f"names the example {example['key']!r} twice" if other == name
                            else f"names the example {example['key']!r}, which {other} names too")
                if self._split_of.get(example["shard"]) != split:
                    return (f"puts the example {example['key']!r} in {example['shard']!r}, which is no shard of "
                            f"split {split!r} the manifest lists")
                self._example_in[example["key"]] = name
                self._named[example["shard"]][example["key"]] += 1
            if {"key": key, "shard": shard} not in entry["examples"]:  # (an input's own example: beside its line)
                return f"its line of {key!r} does not put that input's own example in {shard!r}, which it lies beside"
        self._lineage_read.add(name)
        return None

    def _rejected_problem(self, data) -> str | None:
        rejections, problem = _json_lines(data, ("reason", "stage"), "a rejection with its reason and stage")
        if problem:
            return problem
        for field in ("reason", "stage"):
            held = collections.Counter(rejection[field] for rejection in rejections)
            said = self._manifest["rejected"].get(f"by_{field}")
            if not isinstance(said, dict) or held == collections.Counter(said):
                continue
            odd = min(key for key in set(held) | set(said) if held[key] != said.get(key, 0))
            return (f"holds {held[odd]} rejection(s) of {field} {odd!r}; the manifest's rejected.by_{field} "
                    f"says {said.get(odd, 0)}")
        return None

    def _add_changes(self, data) -> str | None:
        changes, problem = _json_lines(data, ("key", "change"), "a key and its change")
        if problem:
            return problem
        held = collections.Counter(change["change"] for change in changes)
        said = self._manifest["changes"]
        for change in sorted(set(held) | set(_CHANGES)):
            if held[change] != said.get(change, 0):
                return (f"holds {held[change]} key(s) {change}; the manifest's changes.{change} says "
                        f"{said.get(change, 0)}")
        if len({change["key"] for change in changes}) != len(changes):
            return "names a key twice"
        self._changes = changes
        return None

    def problems(self) -> dict[str, str]:
        """``{name: problem}`` for each file that says otherwise of the same records or inputs
        than another does (empty: they agree). A pair is held together only where both files
        matched their entries; a lineage index, only where all its files did."""
        problems = {}
        lineage_read = bool(self._shard_of_lineage) and self._lineage_read == set(self._shard_of_lineage)
        holder = {}  # example key -> the shard that holds its record (without a lineage index to say where)
        for shard, (spans, keys) in sorted(self._records.items()):
            listed = self._indexed.get(shard)
            if listed is not None and listed != spans:
                problems[shard] = _index_problem(shard, spans, listed)
            elif lineage_read and keys != self._named[shard]:
                problems[shard] = _lineage_problem(keys, self._named[shard])
            elif not lineage_read:  # (an example key is one record's: one of an input, or a copy of it)
                twice = min((key for key, count in keys.items() if count > 1 or key in holder), default=None)
                if twice is not None:
                    held = (f"a record of key {twice!r}, as {holder[twice]} does" if twice in holder
                            else f"{keys[twice]} records of key {twice!r}")
                    problems[shard] = f"holds {held}: a key is one example's"
                holder.update(dict.fromkeys(keys, shard))
        if lineage_read and self._changes is not None:
            for change in self._changes:
                indexed = change["key"] in self._indexed_by
                if indexed != (change["change"] != lineage.REMOVED):
                    problems[self._changes_file] = (
                        f"says {change['key']!r} was {change['change']}, and the lineage index "
                        f"{'indexes' if indexed else 'does not index'} it")
                    break
        return problems


def _index_problem(shard: str, spans: list, listed: list) -> str:
    if len(listed) != len(spans):
        return f"holds {_records(len(spans))}; its record index {index_name(shard)} lists {len(listed)}"
    number, (span, said) = next((number, pair) for number, pair in enumerate(zip(spans, listed), 1)
                                if pair[0] != pair[1])
    return (f"its record {number} is at offset {span[0]}, of {span[1]} bytes; its record index {index_name(shard)} "
            f"says offset {said[0]}, of {said[1]} bytes")


def _lineage_problem(keys: collections.Counter, named: collections.Counter) -> str:
    odd = min(key for key in set(keys) | set(named) if keys[key] != named[key])
    held, listed = sum(keys.values()), sum(named.values())
    if held != listed:
        return (f"holds {_records(held)}; the lineage index names {listed} in it ({_records(keys[odd])} of key "
                f"{odd!r}, named {named[odd]})")
    return f"holds {_records(keys[odd])} of key {odd!r}; the lineage index names {named[odd]} in it"
