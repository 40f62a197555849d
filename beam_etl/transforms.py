"""The Beam step around the per-example chain: reads the bytes, runs
:func:`beam_etl.process.process_example`, and turns bad inputs into ``Rejection`` s."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_etl.config import JobConfig
from beam_etl.process import process_example
from beam_etl.records import RejectedInput, SourceRecord, SplitRejections
from beam_etl.splits import assign_split

_MASK_STAGES = ("read_mask", "decode_mask")


def read_uri(uri: str | None, stage: str) -> bytes:
    """The whole file at ``uri`` (any FileSystems scheme); a missing file is a rejection."""
    if uri is None:
        raise RejectedInput(stage, "missing_file", "no URI given")
    try:
        with FileSystems.open(uri) as handle:
            return handle.read()
    except Exception as error:  # pylint: disable=broad-except  # every backend has its own errors
        raise RejectedInput(stage, "unreadable", f"{type(error).__name__}: {error}") from None


class ProcessExamplesFn(beam.DoFn):
    """``SourceRecord`` -> ``EncodedExample`` (1 + augmentation copies), or a ``Rejection``."""

    def __init__(self, config: JobConfig):
        self._config = config

    def setup(self):
        self._inputs = Metrics.counter("beam_etl", "inputs")
        self._written = {split: Metrics.counter("beam_etl", f"written_{split}")
                         for split in self._config.splits}
        self._rejected = {}

    def process(self, record: SourceRecord):
        self._inputs.inc()
        split = assign_split(record.key, record.split, self._config)
        try:
            image_bytes = (record.image_bytes if record.image_bytes is not None
                           else read_uri(record.image_uri, "read_image"))
            mask_bytes = (record.mask_bytes if record.mask_bytes is not None
                          else read_uri(record.mask_uri, "read_mask"))
            examples = process_example(record, image_bytes, mask_bytes, split, self._config)
        except RejectedInput as rejected:
            if rejected.reason not in self._rejected:
                self._rejected[rejected.reason] = Metrics.counter("beam_etl", f"rejected_{rejected.reason}")
            self._rejected[rejected.reason].inc()
            uri = record.mask_uri if rejected.stage in _MASK_STAGES else record.image_uri
            yield rejected.to_rejection(uri, record.key)
            return
        self._written[split].inc(len(examples))
        yield from examples


class ProcessExamples(beam.PTransform):
    """Decode, validate, resize, augment and serialize; returns ``(examples, rejected)``."""

    def __init__(self, config: JobConfig):
        super().__init__()
        self._config = config

    def expand(self, records):
        return (records
                | "DecodeResizeEncode" >> beam.ParDo(ProcessExamplesFn(self._config))
                # EncodedExample | Rejection
                | "SplitRejections" >> SplitRejections())
