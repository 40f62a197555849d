"""``Preprocess(config)``: the whole job as one PTransform, from the sources to the committed
manifest.

    records  = ReadSources        every source, paired, keys unique, split assigned (once)
    examples = ProcessExamples    decode, validate, resize, augment, serialize; or a Rejection
    shards, lineage = WriteShards spilled bytes, grouped by shard, staged; beside each shard, where
                                  the written inputs whose example it holds came from
    rejected = WriteRejected      every Rejection, with its uri and reason, staged
    metadata = WriteRecordsSchema the records' schema (metadata/schema.pbtxt), staged
    statistics = WriteStatistics  the training originals' shares, summed -> the transform graph
                                  (tf.Transform's SavedModel), staged
    manifest = WriteManifest      every report above -> the manifest; the commit moves the staged
                                  files in, the manifest last
"""

from __future__ import annotations

import apache_beam as beam

from beam_etl import code_version
from beam_etl.beam import manifest, sink, sources, statistics
from beam_etl.beam.process_examples import ProcessExamples
from beam_etl.config import JobConfig


class Preprocess(beam.PTransform):
    """Applied to a pipeline's start; returns a one-element PCollection: the manifest dict,
    emitted once the output is committed.

    ``run_id`` holds the lease on ``config.output`` (:mod:`beam_etl.beam.lease`): the job stages
    its files in a folder named by it, and the last step commits them only while it still does.
    Without one (the default) the job can be built, drawn or submitted as a dry run, not run.
    ``chain_code``: the per-image chain's :func:`~beam_etl.code_version.chain_version` as the
    run started (default: as its files are now), which its outcomes are cached and described
    under, and which every process running the chain checks its files against. ``resumed``: the
    dead run this one resumes, where that run had committed its output before it died (its record
    of what changed is kept where this run makes the same output: :func:`manifest.changes_against`).
    """

    def __init__(self, config: JobConfig, run_id: str = "", chain_code: dict[str, str] | None = None,
                 resumed: str = ""):
        super().__init__()
        self._config = config
        self._run_id = run_id
        self._resumed = resumed
        self._chain_code = code_version.chain_version() if chain_code is None else chain_code

    def expand(self, pbegin):
        config = self._config
        records, source_rejected = pbegin | "ReadSources" >> sources.ReadSources(config)
        examples, rejected, sums = records | "ProcessExamples" >> ProcessExamples(config, self._chain_code)
        shard_counts = records | "ShardCounts" >> sink.ShardCounts(config, config.shard_bytes)
        shards, lineage = examples | "WriteShards" >> sink.WriteShards(config.output, self._run_id, shard_counts)
        reports = {  # each a PCollection of one kind of report (beam_etl.beam.manifest)
            manifest.INPUTS: (records, source_rejected),  # every input is in one of them, counted
            manifest.SHARDS: shards,
            manifest.REJECTED: ((source_rejected, rejected)
                                | "FlattenRejected" >> beam.Flatten()
                                | "WriteRejected" >> sink.WriteRejected(config.output, self._run_id)),
            manifest.METADATA: pbegin | "WriteRecordsSchema" >> sink.WriteRecordsSchema(config, self._run_id),
            manifest.LINEAGE: lineage,
        }
        if config.statistics:
            reports[manifest.STATISTICS] = sums | "WriteStatistics" >> statistics.WriteStatistics(config, self._run_id)
        return reports | "WriteManifest" >> manifest.WriteManifest(config, self._run_id, self._chain_code,
                                                                        self._resumed)
