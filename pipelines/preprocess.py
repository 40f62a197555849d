"""Preprocess image-segmentation data into sharded TFRecords, a manifest and a rejected list.

Locally, with the DirectRunner::

    python -m beam_etl.sample_data --output DATA --num_images 200 --seed 0
    python -m pipelines.preprocess --oxford_pets DATA --output OUT --image_size 128
    python -m pipelines.preprocess --images 'DATA/images/*.jpg' \\
        --masks 'DATA/annotations/trimaps/*.png' --output OUT2 --image_size 128 \\
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

On Dataflow (see README.md for the container)::

    python -m pipelines.preprocess --oxford_pets gs://BUCKET/pets --output gs://BUCKET/out \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --sdk_container_image IMAGE
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_etl import commit, lease
from beam_etl import manifest as manifest_lib
from beam_etl import options as options_lib
from beam_etl import sink, sources, statistics
from beam_etl.config import JobConfig
from beam_etl.transforms import ProcessExamples

_MB = 1 << 20


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig, run_id: str = "",
                   scratch_dir: str | None = None):
    """Wires the job's steps onto ``pipeline``; returns the PCollection holding the manifest.

    ``run_id`` holds the lease on ``config.output`` (:mod:`beam_etl.lease`): the last step
    commits the staged files only while it still does. ``scratch_dir``: where tf.Transform
    writes while the job is built (default ``OUTPUT/.incomplete/tft``; a dry run's is elsewhere).
    """
    records, source_rejected = pipeline | "ReadSources" >> sources.ReadSources(config)
    examples, rejected = records | "ProcessExamples" >> ProcessExamples(config)
    shard_counts = records | "ShardCounts" >> sink.ShardCounts(config, int(config.shard_size_mb * _MB))
    shard_reports = examples | "WriteShards" >> sink.WriteShards(config.output, shard_counts)
    all_rejected = (source_rejected, rejected) | "FlattenRejected" >> beam.Flatten()
    rejected_report = all_rejected | "WriteRejected" >> sink.WriteRejected(config.output)
    inputs = ((records, source_rejected)
              | "FlattenInputs" >> beam.Flatten()
              | "CountInputs" >> beam.combiners.Count.Globally())
    reports = [shard_reports | "TagShards" >> beam.Map(lambda info: ("shard", info)),
               rejected_report | "TagRejected" >> beam.Map(lambda info: ("rejected", info)),
               inputs | "TagInputs" >> beam.Map(lambda count: ("inputs", count))]
    if config.statistics:
        statistics_report = examples | "AnalyzeTrainingSplit" >> statistics.AnalyzeAndWriteTransform(config, scratch_dir)
        reports.append(statistics_report | "TagStatistics" >> beam.Map(lambda info: ("statistics", info)))
    reports = tuple(reports) | "FlattenReports" >> beam.Flatten()
    return reports | "WriteManifest" >> manifest_lib.WriteManifest(config, run_id)


def summarize(manifest: dict, seconds: float) -> str:
    lines = [f"beam-etl: {manifest['num_inputs']} inputs -> {manifest['num_written']} written "
             f"({manifest['num_examples']} examples with augmentation), "
             f"{manifest['num_rejected']} rejected, in {seconds:.1f} s "
             f"({manifest['num_inputs'] / max(seconds, 1e-9):.1f} images/s)"]
    for split, info in manifest["splits"].items():
        lines.append(f"  {split:5s} {info['num_examples']:8d} examples in {len(info['files'])} files "
                     f"({info['bytes'] / _MB:.1f} MB)")
    for reason, count in manifest["rejected"]["by_reason"].items():
        lines.append(f"  rejected {reason}: {count}")
    return "\n".join(lines)


def render_graph(config: JobConfig, path: str) -> None:
    """Writes the job's graph to ``path`` with Beam's RenderRunner (steps two levels deep)."""
    from apache_beam.runners.render import RenderRunner  # pylint: disable=import-outside-toplevel

    options = PipelineOptions(flags=[], render_output=[path],
                              render_leaf_composite_nodes=[r"[^/]+/[^/]+$"])
    with tempfile.TemporaryDirectory(prefix="beam_etl_graph_") as scratch:
        with beam.Pipeline(runner=RenderRunner(), options=options) as pipeline:
            build_pipeline(pipeline, config, scratch_dir=scratch)
    print(f"wrote the job's graph to {path}")


def start_local_dask_cluster(pipeline_options: PipelineOptions, workers: int):
    """A dask.distributed LocalCluster of ``workers`` processes, and the options to run on it."""
    # pylint: disable=import-outside-toplevel  # the [dask] extra
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from beam_etl import dask_runner

    cluster = dask_runner.local_cluster(workers)
    pipeline_options.view_as(StandardOptions).runner = options_lib.DASK_RUNNER
    pipeline_options.view_as(DaskOptions).address = cluster.scheduler_address
    return cluster


def runner_name(pipeline_options: PipelineOptions) -> str | None:
    return pipeline_options.view_as(StandardOptions).runner


def runs_here(pipeline_options: PipelineOptions) -> bool:
    """Whether the job's workers end with this process (so a failure here ends the job): the
    DirectRunner's, and a Dask cluster this process started and has closed."""
    if pipeline_options.view_as(options_lib.RunnerOptions).dask_local_workers:
        return True
    return (runner_name(pipeline_options) or "DirectRunner") in options_lib.IN_PROCESS_RUNNERS


def _refuse(error: Exception):
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def run(argv: list[str] | None = None) -> dict | None:
    """Parses flags, runs the job to completion and returns the manifest (None for a dry run, or
    a job submitted with ``--no_wait_until_finish``).

    Everything is checked before anything is written: flags, sources, and that ``--output`` is
    this run's to write (:func:`beam_etl.commit.check_output`). Then the run takes the lease on
    ``--output``; a run that fails puts the earlier output back and releases it.
    """
    argv = sys.argv[1:] if argv is None else argv
    config, pipeline_options = options_lib.parse_args(
        argv, prog="python -m pipelines.preprocess", description=__doc__.split("\n\n")[0])
    runner_options = pipeline_options.view_as(options_lib.RunnerOptions)
    if options_lib.is_dry_run(pipeline_options):  # builds the job; touches neither output nor sources
        with tempfile.TemporaryDirectory(prefix="beam_etl_dry_run_") as scratch:
            with beam.Pipeline(options=pipeline_options) as pipeline:
                build_pipeline(pipeline, config, scratch_dir=scratch)
        return None
    try:
        sources.check_sources(config, pipeline_options)
        commit.check_output(config.output, config.overwrite)
    except ValueError as error:
        _refuse(error)
    if runner_options.render_graph:
        render_graph(config, runner_options.render_graph)
    try:
        holder = lease.take(config.output, runner_options.break_lease, runner_options.lease_timeout_hours)
    except lease.LeaseError as error:
        _refuse(error)
    try:
        commit.clear_leftovers(config.output)  # may put back an output a dead run was replacing
        commit.check_output(config.output, config.overwrite)  # so again, and another run may have ended
    except (ValueError, RuntimeError) as error:
        commit.abandon(config.output, holder.run_id)
        _refuse(error)
    cluster = None
    started = time.perf_counter()
    try:
        commit.crash_point("after_lease")
        if runner_options.dask_local_workers:
            cluster = start_local_dask_cluster(pipeline_options, runner_options.dask_local_workers)
        with beam.Pipeline(options=pipeline_options) as pipeline:
            build_pipeline(pipeline, config, holder.run_id)
    except BaseException:
        if cluster is not None:  # its workers stop here: none of them can be mid-commit after this
            cluster.close()
            cluster = None
        if runs_here(pipeline_options):
            commit.abandon(config.output, holder.run_id)
        else:  # the job may still run (and commit) elsewhere: leave it its lease and files
            print(f"note: the job may still be running on {runner_name(pipeline_options)}; --output "
                  f"{config.output!r} keeps its lease until it ends. Once it has, a later run with "
                  "--break_lease clears what it left.", file=sys.stderr)
        raise
    finally:
        if cluster is not None:
            cluster.close()
    seconds = time.perf_counter() - started
    if pipeline_options.view_as(StandardOptions).no_wait_until_finish:
        print(f"submitted to {runner_name(pipeline_options)}: the job commits {config.output} (and "
              "releases its lease) when it ends")
        return None
    manifest = manifest_lib.read_manifest(config.output)
    print(summarize(manifest, seconds))
    return manifest


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    run()
