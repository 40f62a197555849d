"""The element types that flow between the job's steps.

Every source yields :class:`SourceRecord`; every step that refuses an input yields a
:class:`Rejection` instead of dropping it, so ``inputs == written + rejected`` holds.
"""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam

UNKNOWN_LABEL = -1


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """One raw input: an image, its mask, and what the source knows about it.

    ``split`` is the split the source assigns (``"train"``, ``"val"``, ``"test"``), the
    Oxford-IIIT ``"trainval"`` list (to be divided by ``--val_fraction``), or ``None`` when
    the source has no split and ``--split_fractions`` decides. ``image_bytes`` and
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


class RejectedInput(Exception):
    """Raised by the per-image functions for bad data; the DoFn turns it into a Rejection."""

    def __init__(self, stage: str, reason: str, message: str):
        super().__init__(f"{stage}/{reason}: {message}")
        self.stage = stage
        self.reason = reason
        self.message = message

    def to_rejection(self, uri: str, key: str | None) -> Rejection:
        return Rejection(uri=uri, stage=self.stage, reason=self.reason,
                         message=self.message, key=key)


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    """A serialized ``tf.train.Example`` ready for a shard.

    ``example_key`` is unique per output record (the source key, plus ``#aug<k>`` for
    augmentation copy k); ``copy`` is 0 for the example itself.
    """

    example_key: str
    split: str
    copy: int
    serialized: bytes


def is_rejection(element) -> bool:
    return isinstance(element, Rejection)


@beam.ptransform_fn
def SplitRejections(mixed):  # pylint: disable=invalid-name
    """A step's output of values and :class:`Rejection` s -> ``(values, rejections)``.

    Steps that refuse inputs yield the ``Rejection`` in their one output and this splits it
    with two Filters, instead of a tagged output: Beam 2.77's Dask runner sends every tagged
    output to the main one, and two filters behave the same on every runner (they fuse with
    the step before them, so they cost no shuffle).
    """
    return (mixed | "KeepValues" >> beam.Filter(lambda element: not is_rejection(element)),
            mixed | "KeepRejections" >> beam.Filter(is_rejection))
