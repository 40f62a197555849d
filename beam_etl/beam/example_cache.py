"""Each input's outcome, cached by content: a rerun decodes only inputs it has not seen.

An outcome is what the per-image chain makes of one input: its records (the example and its
augmentation copies, serialized) and its share of the statistics, or its rejection (stage,
reason, message). It depends only on

- the input's bytes (image and mask) and what the source says of it (key, URIs, label, class
  name, output split: the record's ``image/filename`` is its URI, augmentation is for training
  only and seeded by the key);
- the settings that shape an example (:class:`~beam_etl.config.ChainSettings`, all the chain
  is given of them);
- the code of the chain (:func:`~beam_etl.code_version.chain_version`: its modules' source) and the versions
  of the libraries it decodes, resizes and encodes with (:data:`CHAIN_LIBRARIES`);

and its entry's name is the SHA-256 of all of them, so a changed mask, a changed flag that
matters, a new version of the chain or of a library it calls finds no entry, while a flag that
does not matter (``--num_shards``, the output folder) finds them all.

An entry is a header (its name among it) and the records' bytes, behind a crc32c of the whole
(:func:`encode`, :func:`decode`): one that does not match its checksum or its name is no
outcome. Where entries are kept: :mod:`beam_etl.beam.outcome_store`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json

import google_crc32c

from beam_etl.code_version import chain_version
from beam_etl.config import ChainSettings
from beam_etl.elements import EncodedExample, RejectedInput, SourceRecord
from beam_etl.image.chain import process_example
from beam_etl.image.pixel_statistics import ExampleSums

MAGIC = b"beam-etl outcome 2\n"
# The libraries the chain calls, by the module it imports: another version of one may decode,
# resize or encode to other bytes (a new libjpeg-turbo in simplejpeg, a new resize kernel in
# OpenCV), so it is a new chain.
CHAIN_LIBRARIES = ("numpy", "cv2", "PIL", "simplejpeg", "pyspng")


@functools.cache
def library_versions() -> dict[str, str]:
    """``{module: version}`` of :data:`CHAIN_LIBRARIES`, as the modules this process imports say."""
    return {name: importlib.import_module(name).__version__ for name in CHAIN_LIBRARIES}


def version(config, split: str = "train", libraries: dict[str, str] | None = None,
            code: dict[str, str] | None = None) -> str:
    """The chain's code (``code``, its :func:`~beam_etl.code_version.chain_version` as the run
    started; else as the files are now), the versions of its libraries (``libraries``, else
    :func:`library_versions`) and ``config``'s :meth:`~beam_etl.config.JobConfig.chain_settings`
    for ``split``, hashed."""
    return _version(config.chain_settings(split), libraries, code)


def _version(settings: ChainSettings, libraries: dict[str, str] | None, code: dict[str, str] | None) -> str:
    described = {"code": chain_version() if code is None else code,
                 "libraries": library_versions() if libraries is None else libraries,
                 "settings": dataclasses.asdict(settings)}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=list).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Chain:
    """The chain as a run runs it for the inputs of one split: the settings it is given, and the
    :func:`version` its outcomes are named under, made from the same settings (:meth:`of`), so
    that an outcome is never named by other settings than those it was made with."""

    split: str
    settings: ChainSettings
    version: str

    @classmethod
    def of(cls, config, split: str, code: dict[str, str] | None = None) -> Chain:
        settings = config.chain_settings(split)
        return cls(split, settings, _version(settings, None, code))

    def entry_name(self, record: SourceRecord, image_sha256: str, mask_sha256: str) -> str:
        """:func:`entry_name` of ``record``'s outcome."""
        return entry_name(self.version, record, image_sha256, mask_sha256)

    def compute(self, record: SourceRecord, image_bytes: bytes, mask_bytes: bytes) -> Outcome:
        """What the chain makes of ``record``'s files (an input of this chain's split): its
        examples and statistics share, or its rejection."""
        if record.split != self.split:
            raise ValueError(f"{record.key!r} is an input of {record.split!r}, not of {self.split!r}")
        try:
            examples, sums = process_example(record, image_bytes, mask_bytes, self.split, self.settings)
        except RejectedInput as rejected:
            return Outcome(rejected=rejected)
        return Outcome(examples=tuple(examples), sums=sums)


def digest(data: bytes) -> str:
    """An input file's content hash (SHA-256, hex): what an entry's name and the lineage index use."""
    return hashlib.sha256(data).hexdigest()


_CARRIED_BYTES = ("image_bytes", "mask_bytes")  # (named by their digests)


def entry_name(chain_version: str, record: SourceRecord, image_sha256: str, mask_sha256: str) -> str:
    """The name of ``record``'s outcome, from :func:`version`, every field of the record (a field
    added to :class:`SourceRecord` is part of the name by construction) and its files'
    :func:`digest` s, which stand for the bytes a record may carry."""
    described = {field.name: getattr(record, field.name) for field in dataclasses.fields(record)
                 if field.name not in _CARRIED_BYTES}
    described.update(version=chain_version, image=image_sha256, mask=mask_sha256)
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What the chain made of one input: ``examples`` (and ``sums``, or None), or ``rejected``."""

    examples: tuple[EncodedExample, ...] = ()
    sums: ExampleSums | None = None
    rejected: RejectedInput | None = None


def _checksum(body: bytes) -> bytes:
    return f"{google_crc32c.value(body):08x}".encode()


def encode(name: str, outcome: Outcome) -> bytes:
    header = {
        "name": name,
        "examples": [{"key": e.example_key, "split": e.split, "copy": e.copy, "bytes": len(e.serialized)}
                     for e in outcome.examples],
        "sums": dict(vars(outcome.sums)) if outcome.sums is not None else None,  # (asdict deep-copies: 20 us)
        "rejected": ({"stage": outcome.rejected.stage, "reason": outcome.rejected.reason,
                      "message": outcome.rejected.message, "of_mask": outcome.rejected.of_mask}
                     if outcome.rejected is not None else None),
    }
    body = json.dumps(header, sort_keys=True).encode("utf-8") + b"\n" + b"".join(e.serialized for e in outcome.examples)
    return MAGIC + _checksum(body) + b"\n" + body


def decode(name: str, data: bytes) -> Outcome | None:
    """The outcome in ``data``, or None when it is not an intact entry named ``name``."""
    if not data.startswith(MAGIC):
        return None
    checksum, _, body = data[len(MAGIC):].partition(b"\n")
    if checksum != _checksum(body):
        return None
    text, _, payload = body.partition(b"\n")
    try:
        header = json.loads(text)
        if header["name"] != name:
            return None
        examples, offset = [], 0
        for entry in header["examples"]:
            examples.append(EncodedExample(example_key=entry["key"], split=entry["split"], copy=entry["copy"],
                                           serialized=payload[offset:offset + entry["bytes"]]))
            offset += entry["bytes"]
        if offset != len(payload):
            return None
        sums = header["sums"]
        rejected = header["rejected"]
        return Outcome(
            examples=tuple(examples),
            sums=ExampleSums(**{k: tuple(v) if isinstance(v, list) else v for k, v in sums.items()}) if sums else None,
            rejected=RejectedInput(rejected["stage"], rejected["reason"], rejected["message"], rejected.get("of_mask"))
            if rejected else None)
    except (ValueError, KeyError, TypeError):
        return None
