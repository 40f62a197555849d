"""``Preprocess(config)``: the whole job as one PTransform, from the sources to the committed
manifest.

    records  = ReadSources        every source, paired, keys unique, split assigned (once)
    examples = ProcessExamples    decode, validate, resize, augment, serialize; or a Rejection
    shards   = WriteShards        spilled bytes, grouped by shard, staged
    rejected = WriteRejected      every Rejection, with its uri and reason, staged
    metadata = WriteRecordsSchema the records' schema (metadata/schema.pbtxt), staged
    (statistics: tf.Transform over the training split, its graph staged)
    manifest = WriteManifest      every report above -> the manifest; the commit moves the staged
                                  files in, the manifest last
"""

from __future__ import annotations

import apache_beam as beam

from beam_etl.beam import manifest, sink, sources, statistics
from beam_etl.beam.process_examples import ProcessExamples
from beam_etl.config import JobConfig


class Preprocess(beam.PTransform):
    """Applied to a pipeline's start; returns a one-element PCollection: the manifest dict,
    emitted once the output is committed.

    ``run_id`` holds the lease on ``config.output`` (:mod:`beam_etl.beam.lease`): the last step
    commits the staged files only while it still does. ``scratch_dir``: where tf.Transform
    writes while the job is built (default ``OUTPUT/.incomplete/tft``; a dry run's is elsewhere).
    """

    def __init__(self, config: JobConfig, run_id: str = "", scratch_dir: str | None = None):
        super().__init__()
        self._config = config
        self._run_id = run_id
        self._scratch_dir = scratch_dir

    def expand(self, pbegin):
        config = self._config
        records, source_rejected = pbegin | "ReadSources" >> sources.ReadSources(config)
        examples, rejected = records | "ProcessExamples" >> ProcessExamples(config)
        shard_counts = records | "ShardCounts" >> sink.ShardCounts(config, config.shard_bytes)
        reports = {  # each a PCollection of one kind of report (beam_etl.beam.manifest)
            manifest.INPUTS: (records, source_rejected) | "FlattenInputs" >> beam.Flatten(),
            manifest.SHARDS: examples | "WriteShards" >> sink.WriteShards(config.output, shard_counts),
            manifest.REJECTED: ((source_rejected, rejected)
                                | "FlattenRejected" >> beam.Flatten()
                                | "WriteRejected" >> sink.WriteRejected(config.output)),
            manifest.METADATA: pbegin | "WriteRecordsSchema" >> sink.WriteRecordsSchema(config),
        }
        if config.statistics:
            reports[manifest.STATISTICS] = examples | "AnalyzeTrainingSplit" >> statistics.AnalyzeAndWriteTransform(
                config, self._scratch_dir)
        return reports | "WriteManifest" >> manifest.WriteManifest(config, self._run_id)
