"""The element types that flow between the job's steps. No Beam: the per-image functions raise
and return them too.

Every source yields :class:`SourceRecord`; every step that refuses an input yields a
:class:`Rejection` instead of dropping it, so ``inputs == written + rejected`` holds.
"""

from __future__ import annotations

import dataclasses
import json
import re

from beam_etl.lineage import Entry

UNKNOWN_LABEL = -1
# An augmentation copy's key is its source key with this suffix: a source key of that form would
# share its key with another input's copy, so sources may not give one (the pairing step rejects it).
_COPY_SUFFIX = re.compile(r"#aug[0-9]+\Z")  # (not "$", which matches before a final newline too)


def example_key(source_key: str, copy: int) -> str:
    """The key of a record: the source key, plus ``#aug<k>`` for augmentation copy k."""
    return source_key if copy == 0 else f"{source_key}#aug{copy}"


def is_reserved_key(source_key: str) -> bool:
    """Whether a source key has the form of an augmentation copy's (``...#aug<k>``)."""
    return _COPY_SUFFIX.search(source_key) is not None


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """One raw input: an image, its mask, and what the source knows about it.

    ``split``, as a source makes the record, is the split the source assigns (``"train"``,
    ``"val"``, ``"test"``), the Oxford-IIIT ``"trainval"`` list (to be divided by
    ``--val_fraction``), or ``None`` when the source has no split and ``--split_fractions``
    decides; :class:`~beam_etl.beam.sources.ReadSources` replaces it by the output split, once,
    for every later step. ``image_bytes`` and
    ``mask_bytes`` are set only by sources that carry the bytes themselves (BigQuery BYTES);
    otherwise the decoding step reads the URIs.
    """

    key: str
    image_uri: str
    mask_uri: str | None
    label: int = UNKNOWN_LABEL
    label_name: str = ""
    split: str | None = None
    image_bytes: bytes | None = None
    mask_bytes: bytes | None = None


@dataclasses.dataclass(frozen=True)
class Rejection:
    """An input the job refused, with where (``stage``) and why (``reason``, a short code)."""

    uri: str
    stage: str
    reason: str
    message: str
    key: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


MASK_STAGES = ("read_mask", "decode_mask")  # the stages of the mask's own file


class RejectedInput(Exception):
    """Raised by the per-image functions for bad data; the DoFn turns it into a Rejection that
    names the file at fault: the mask where ``of_mask`` (said where it is raised; by default,
    whether the stage is one of the mask's own), else the image."""

    def __init__(self, stage: str, reason: str, message: str, of_mask: bool | None = None):
        super().__init__(f"{stage}/{reason}: {message}")
        self.stage = stage
        self.reason = reason
        self.message = message
        self.of_mask = stage in MASK_STAGES if of_mask is None else of_mask

    def to_rejection(self, uri: str, key: str | None) -> Rejection:
        return Rejection(uri=uri, stage=self.stage, reason=self.reason,
                         message=self.message, key=key)


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """A serialized ``tf.train.Example`` ready for a shard.

    ``example_key`` is unique per output record (the source key, plus ``#aug<k>`` for
    augmentation copy k); ``copy`` is 0 for the example itself. The example itself carries its
    input's line of the lineage index (a :class:`beam_etl.lineage.Entry`, set by the step that
    reads the input) to the shard writer, which writes it beside the shard.
    """

    example_key: str
    split: str
    copy: int
    serialized: bytes
    lineage: Entry | None = None  # never part of a cache entry
    # Where ``serialized`` is already on disk, ``(uri, offset)``: in the cache of outcomes' entry
    # it came from or went to (beam_etl.beam.outcome_store), so that the sink need not write
    # it again. Never part of a cache entry.
    stored: tuple[str, int] | None = None
