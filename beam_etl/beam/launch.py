"""Running the job from this process: the checks before anything is touched, the lease, the
run on the chosen runner, and what a failure leaves.

:func:`launch` takes what :func:`beam_etl.beam.options.parse_args` made. Everything is checked
before anything is written: flags, sources, and that ``--output`` is this run's to write
(:func:`beam_etl.beam.commit.check_output`). Then the run takes the lease on ``--output``; a
run that fails puts the earlier output back and releases it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, PipelineOptions, SetupOptions,
                                                  StandardOptions)

from beam_etl import failure_report, host_ports
from beam_etl.native_logs import drop_notes
from beam_etl.beam import (commit, crash, filesystem, job_progress, lease, manifest, options, outcome_store,
                           sdk_worker, sources, up_to_date, warm_workers)
from beam_etl.beam.run_summary import cache_counts, summarize
from beam_etl.beam.preprocess import Preprocess
from beam_etl.config import JobConfig
from beam_etl.output_layout import INCOMPLETE_DIR, cache_folder
from beam_etl.progress import ProgressLine


# Environment of the workers of a Dask cluster the job starts (--dask_local_workers); docs/dask.md
# says how to set the same on a cluster of your own. (An explicit value in the launching
# environment wins, as with dask's own settings.)
DASK_WORKER_ENVIRON = {
    # dask.distributed's default, 65536 (hand freed memory back to the OS sooner), also pins
    # glibc's mmap threshold at 128 KiB: every decoded photo became a fresh mmap, page-faulted
    # in and unmapped again, and the per-image steps ran about a quarter slower
    # (BENCHMARKS.md). The workers hold no dataset, so they keep glibc's defaults.
    "MALLOC_TRIM_THRESHOLD_": None,
    # TensorFlow sizes its thread pools to the machine, not to the worker: a one-thread worker
    # running tf.Transform's graphs used two cores, and workers sharing a machine fought over
    # them. One thread each, as dask already does for OpenMP/MKL/OpenBLAS.
    "TF_NUM_INTRAOP_THREADS": 1,
    "TF_NUM_INTEROP_THREADS": 1,
}


def local_dask_cluster(workers: int):
    """A dask.distributed LocalCluster of ``workers`` one-thread processes set up for this job."""
    import beam_dask  # pylint: disable=import-outside-toplevel  # the [dask] extra

    return beam_dask.local_cluster(workers, DASK_WORKER_ENVIRON)


def _on_local_dask_cluster(pipeline_options: PipelineOptions, workers: int):
    """Starts a cluster of ``workers`` and points ``pipeline_options`` at it; returns the cluster."""
    from apache_beam.runners.dask.dask_runner import DaskOptions  # pylint: disable=import-outside-toplevel

    cluster = local_dask_cluster(workers)
    pipeline_options.view_as(StandardOptions).runner = options.DASK_RUNNER
    pipeline_options.view_as(DaskOptions).address = cluster.scheduler_address
    return cluster


# What every worker process of a multi-process DirectRunner run logs as it starts, and the runner
# repeats as a warning, though nothing is wrong: it keeps no state between runs, and the job's
# own flags, which it does not parse (the job's settings reach it inside its steps).
BEAM_WORKER_START_NOTES = ("No semi_persistent_directory found", "Discarding unparseable args")
_WORKER_LOG = "apache_beam.runners.portability.local_job_service"
# What the runner warns of when it is given its worker processes' environment (local_runner).
BEAM_WORKER_COUNT_NOTE = "If direct_num_workers is not equal to 1"
_RUNNER_LOG = "apache_beam.runners.portability.fn_api_runner.fn_runner"


def quiet_worker_start() -> None:
    drop_notes(_WORKER_LOG, BEAM_WORKER_START_NOTES)


def quiet_worker_count() -> None:
    drop_notes(_RUNNER_LOG, (BEAM_WORKER_COUNT_NOTE,))


# From this many inputs on, a run left to the DirectRunner's defaults uses a worker process per
# core. Forked from the warm parent (beam_etl.beam.warm_workers), 2 workers cost 0.4 s more than
# this process alone at 50 pairs, the same at 350, and save 0.2 s at 500 and 0.4 s at 1,000
# (benchmarks/whole_job.py, BENCHMARKS.md).
MANY_INPUTS = 400
INPUTS_TO_COUNT = 10_000_000  # the progress line's total: no more are listed at launch


def _counted(total: int | None) -> int | None:
    """The progress line's total: None (unknown) where the count stopped at its limit."""
    return None if total is None or total >= INPUTS_TO_COUNT else total


def local_workers(config: JobConfig, pipeline_options: PipelineOptions) -> str | None:
    """For a run left to the DirectRunner's defaults (:func:`options.job_chooses_workers`), sets
    how it uses this machine and says so: one worker process per core for :data:`MANY_INPUTS`
    inputs or more, this process alone below that, and when the sources cannot tell how many
    they hold (a BigQuery source: its client's settings, an emulator's for one, live in this
    process)."""
    if not options.job_chooses_workers(pipeline_options):
        return None
    cores = os.cpu_count() or 1
    direct = pipeline_options.view_as(DirectOptions)
    inputs = sources.count_inputs(config, MANY_INPUTS)
    if cores > 1 and inputs is not None and inputs >= MANY_INPUTS:
        direct.direct_running_mode, direct.direct_num_workers = "multi_processing", cores
        return f"on {cores} worker processes, one per core"
    direct.direct_num_workers = 1
    if cores == 1:
        return "in this process (one core)"
    if inputs is None:
        return "in this process (the sources do not say how many inputs they hold)"
    return f"in this process (under {MANY_INPUTS:,} inputs)"


def starts_worker_processes(pipeline_options: PipelineOptions) -> bool:
    """Whether :func:`local_runner` gives the run worker processes (started with sdk_worker's
    command, so from the warm parent where there is one)."""
    return (not pipeline_options.view_as(StandardOptions).runner
            and pipeline_options.view_as(DirectOptions).direct_running_mode == "multi_processing")


def local_runner(pipeline_options: PipelineOptions):
    """With no ``--runner``, the runner of Beam's DirectRunner that the job is tested on, the
    FnApiRunner (it honours ``--direct_running_mode`` and ``--direct_num_workers``); otherwise
    None, for Beam to resolve ``--runner``. Beam 2.77's DirectRunner first tries PrismRunner,
    which it downloads from GitHub: where that succeeds the job would run on another engine
    than here (where it fails, after 0.3 s)."""
    if pipeline_options.view_as(StandardOptions).runner:
        return None
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=import-outside-toplevel
    from apache_beam.transforms.environments import SubprocessSDKEnvironment  # pylint: disable=import-outside-toplevel

    if not starts_worker_processes(pipeline_options):
        return FnApiRunner()
    direct = pipeline_options.view_as(DirectOptions)
    # The same worker processes as Beam's multi_processing mode, started with sdk_worker's command
    # (Beam's harness, without the slow interpreter teardown). Beam sets its own command for that
    # mode, so the runner is given the environment and told the mode that keeps it.
    direct.direct_running_mode = "in_memory"
    quiet_worker_count()
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(sdk_worker.command()))


def render_graph(config: JobConfig, path: str) -> None:
    """Writes the job's graph to ``path`` with Beam's RenderRunner (steps two levels deep)."""
    from apache_beam.runners.render import RenderRunner  # pylint: disable=import-outside-toplevel

    render_options = PipelineOptions(flags=[], render_output=[path],
                                     render_leaf_composite_nodes=[r"[^/]+/[^/]+/[^/]+$"])
    with beam.Pipeline(runner=RenderRunner(), options=render_options) as pipeline:
        _ = pipeline | "Preprocess" >> Preprocess(config)
    print(f"wrote the job's graph to {path}")


@contextlib.contextmanager
def beam_scratch(pipeline_options: PipelineOptions):
    """Around building and submitting a job for workers in containers: Beam 2.77 writes what it
    stages for them (the pickled main session, the list of this environment's packages) into a
    temporary folder of its own that it never removes (``environments.python_sdk_dependencies``),
    one per build. Folders made in the temporary folder meanwhile go in one of the job's, removed
    at the end. Beam's cache of downloaded requirements stays where Beam keeps it across
    submissions (its ``--requirements_cache`` default, in the temporary folder)."""
    setup = pipeline_options.view_as(SetupOptions)
    if setup.requirements_cache is None:
        setup.requirements_cache = os.path.join(tempfile.gettempdir(), "beam-requirements-cache")
    scratch = tempfile.mkdtemp(prefix="beam-etl-submission-")
    previous = tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


class SubmittingPipeline(beam.Pipeline):
    """A pipeline for a runner whose workers run in containers (Dataflow, a portable runner; not
    the DirectRunner or Dask): its :meth:`run`, which builds the job and submits it, runs in
    :func:`beam_scratch`; the wait for the job (``with``'s exit) does not."""

    def run(self, test_runner_api="AUTO"):
        with beam_scratch(self._options):
            return super().run(test_runner_api)


class HerePipeline(beam.Pipeline):
    """A pipeline for a runner of this machine's processes or a Dask cluster: the temporary
    folder Beam makes for every pipeline, used by cross-language transforms only (the job has
    none), is removed at once, so that a run killed before its end (where Beam would remove it)
    leaves none behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.rmdir(self.local_tempdir)  # (Beam removes it again at the end, ignoring that it is gone)


def pipeline_for(runner, pipeline_options: PipelineOptions) -> beam.Pipeline:
    """The job's pipeline on ``runner`` (None: the one ``--runner`` names)."""
    local = options.runner_kind(pipeline_options) in options.PROCESS_AND_DASK_RUNNERS
    return (HerePipeline if local else SubmittingPipeline)(runner=runner, options=pipeline_options)


def runner_name(pipeline_options: PipelineOptions) -> str | None:
    return pipeline_options.view_as(StandardOptions).runner


def runs_here(pipeline_options: PipelineOptions) -> bool:
    """Whether the job's workers end with this process (so a failure here ends the job): the
    DirectRunner's, and a Dask cluster this process started and has closed."""
    if pipeline_options.view_as(options.LaunchOptions).dask_local_workers:
        return True
    return options.runner_kind(pipeline_options) in options.IN_PROCESS_RUNNERS


def _first_missing(output: str) -> str | None:
    """(A local ``output`` not there yet) the topmost folder of its path that is missing: the
    first a run makes. None when ``output`` is there, or is not local."""
    if not filesystem.is_local(output):
        return None
    path = os.path.abspath(filesystem.local_path(output))
    if os.path.lexists(path):
        return None
    while os.path.dirname(path) != path and not os.path.lexists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


def _abandon(output: str, run_id: str, made_from: str | None) -> None:
    """After a failed run: :func:`commit.abandon`, and the folders this run made on the way to
    ``output`` (from ``made_from`` down) removed again where it left nothing in them (a run that
    computed outcomes leaves them in its cache there)."""
    commit.abandon(output, run_id)
    if made_from is None:
        return
    folder = os.path.abspath(filesystem.local_path(output))
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return  # not empty: kept, and the folders above it
        if folder == made_from:
            return
        folder = os.path.dirname(folder)


def check_cache(config: JobConfig) -> None:
    """Tells of a (local) cache this user may only read (the run uses what it holds and keeps
    no outcome), and of the cache's files this user may not read (another user's, in a shared
    ``--cache``), whose outcomes are computed again. Raises ValueError, naming the flag, for a
    local ``--cache`` folder that is not there and cannot be made (under a file, in a folder this
    user may not write to): a run would neither read nor keep anything there."""
    if not config.use_cache:
        return
    cache = cache_folder(config.output, config.cache_dir)
    store = outcome_store.OutcomeStore(cache)
    refusal = store.refusal()
    if refusal is not None and config.cache_dir and filesystem.is_local(config.cache_dir) \
            and not os.path.isdir(filesystem.local_path(config.cache_dir)):
        raise ValueError(f"--cache {config.cache_dir!r}: no such folder, and none can be made ({refusal})")
    if refusal is not None:
        print(f"beam-etl: the cache {cache} is read-only to this user ({refusal}): the outcomes it holds "
              "are used and none is kept, so a rerun or a resumed run computes the rest again "
              "(--cache names another)", file=sys.stderr)
    unreadable = store.unreadable()
    if unreadable:
        print(f"beam-etl: {len(unreadable)} files of the cache {cache} cannot be read by this user "
              "(another user's): the outcomes they hold are computed again", file=sys.stderr)


def _refuse(error: Exception):
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def launch(config: JobConfig, pipeline_options: PipelineOptions, command_line: dict | None = None,
           code: up_to_date.StartingCode | None = None) -> dict | None:
    """Runs the job to completion and returns the manifest (None for a dry run, or a job
    submitted with ``--no_wait_until_finish``). Exits with status 2, having touched nothing,
    when a source or ``--output`` is not usable. ``command_line``, the command it was parsed
    from (:func:`up_to_date.command_line`): a local run over local folders leaves the state by
    which the same command finds the output up to date (:mod:`beam_etl.beam.up_to_date`).
    ``code``: the job's code as the command started, before it imported any of it (default: as
    it is now).

    In turn: the checks, which touch nothing (:func:`_checked`); the output's lease, and what a
    dead run left cleared (:func:`_held`); the run (:func:`_run_held`)."""
    code = up_to_date.StartingCode.now() if code is None else code
    launch_options = pipeline_options.view_as(options.LaunchOptions)
    if options.is_dry_run(pipeline_options):  # builds the job; touches neither output nor sources
        with pipeline_for(None, pipeline_options) as pipeline:
            _ = pipeline | "Preprocess" >> Preprocess(config)
        job_name = pipeline_options.view_as(GoogleCloudOptions).job_name
        print(f"beam-etl: dry run: DataflowRunner built the job{f' {job_name!r}' if job_name else ''} and submitted "
              "nothing; nothing was read or written")
        return None
    command = lease.command_hash(config.flags())
    resuming, workers = _checked(config, pipeline_options, launch_options, command)
    if not starts_worker_processes(pipeline_options):
        warm_workers.stop()  # started speculatively (pipelines.preprocess): no worker will need it
    quiet_worker_start()
    if workers:
        print(f"beam-etl: running {workers} (--direct_running_mode and --direct_num_workers choose)")
    made_from = _first_missing(config.output)
    holder, replaced, resumed = _held(config, pipeline_options, launch_options, command, resuming, made_from)
    return _run_held(config, pipeline_options, holder, made_from, replaced, command_line, code, resumed)


def _check_scheduler(pipeline_options: PipelineOptions, launch_options) -> None:
    """A Dask scheduler named by ``--dask_client_address`` answers, before the output's lease is
    taken: where nothing does, dask's client waits for its timeout (30 s) and then fails the run,
    which leaves a cluster's run its lease; where a service that is not Dask's does, it waits for
    ever; a worker's address fails the run."""
    scheduler = None if launch_options.dask_local_workers else options.tcp_scheduler(pipeline_options)
    if scheduler is None:
        return
    address = pipeline_options.get_all_options()["address"]
    refused = host_ports.refusal(*scheduler)
    if refused is not None:
        raise ValueError(f"--dask_client_address {address!r}: no Dask scheduler answers there ({refused})")
    from beam_dask.cluster import scheduler_refusal  # pylint: disable=import-outside-toplevel  # the [dask] extra

    refused = scheduler_refusal(address, pipeline_options.get_all_options().get("timeout"))
    if refused is not None:
        raise ValueError(f"--dask_client_address {address!r}: {refused}")


def _checked(config: JobConfig, pipeline_options: PipelineOptions, launch_options, command: str):
    """``(resuming, workers)``: the dead run this one resumes (None: none), and the worker
    processes it runs, once the sources, ``--output`` and ``--cache`` are checked; exits with
    status 2 where one is not usable, having touched nothing."""
    try:
        sources.check_sources(config, pipeline_options)
        _check_scheduler(pipeline_options, launch_options)
        commit.check_writable(config.output)
        check_cache(config)
        dead = lease.read_holder(config.output)
        # Rerunning the command of a run that died resumes it: this run may replace what that
        # one wrote (its outcomes are in the cache; what it staged or committed is made again).
        resuming = dead if lease.is_resumable(dead, command) else None
        overwrite = config.overwrite or resuming is not None
        # A stale lease that --break_lease takes: the run rolls back what the dead run left (a
        # swap killed half way included) before it asks for --overwrite, so that without it the
        # earlier output is put back and nothing replaced.
        breaking = (dead is not None and launch_options.break_lease
                    and lease.is_stale(dead, launch_options.lease_timeout_hours))
        commit.check_output(config.output, overwrite or breaking)
        return resuming, local_workers(config, pipeline_options)  # (lists the sources' first inputs)
    except (ValueError, OSError) as error:
        _refuse(error)


def _held(config: JobConfig, pipeline_options: PipelineOptions, launch_options, command: str, resuming,
          made_from: str | None):
    """``(holder, replaced, resumed)``: the output's lease taken (a dead run's, this command's,
    resumed), what a dead run left cleared, the output this run replaces (None: none), and the id
    of the dead run it resumes where that run had committed it ("" otherwise: this run makes the
    dead run's output again, :func:`beam_etl.beam.manifest.changes_against`); exits with status 2
    where the output is another's or not to be replaced, giving the lease back."""
    try:
        holder = lease.take(config.output, launch_options.break_lease, launch_options.lease_timeout_hours,
                            local=runs_here(pipeline_options), command=command, run_id=warm_workers.run_id())
    except lease.LeaseError as error:
        _refuse(error)
    try:  # (from here a failure, a refusal or a Ctrl-C puts the output back and releases it)
        crash.crash_point("lease_taken")
        if resuming is not None and holder.took_over != resuming.run_id:  # released meanwhile: no resume
            resuming = None
        if resuming is not None:
            reused = "its finished images come from the cache" if config.use_cache else "--no_cache: nothing is reused"
            print(f"beam-etl: resuming {resuming.describe()}, which died; {reused}")
        commit.clear_leftovers(config.output)  # may put back an output a dead run was replacing
        # so again, and another run may have ended; the output it replaces (its class ids, for the summary)
        replaced = commit.check_output(config.output, config.overwrite or resuming is not None)
    except (ValueError, RuntimeError) as error:
        _abandon(config.output, holder.run_id, made_from)
        _refuse(error)
    except BaseException:
        _abandon(config.output, holder.run_id, made_from)
        raise
    if launch_options.render_graph:  # once the run holds the output: a refused run draws nothing
        try:  # (a graph that cannot be drawn fails the run, with its traceback: no refusal of a flag)
            render_graph(config, launch_options.render_graph)
        except BaseException:
            _abandon(config.output, holder.run_id, made_from)
            raise
    resumed = resuming.run_id if resuming is not None and (replaced or {}).get("run_id") == resuming.run_id else ""
    return holder, replaced, resumed


def _committed(output: str, run_id: str, pipeline_options: PipelineOptions, made_from: str | None) -> dict:
    """The manifest run ``run_id`` committed in ``output``, once its runner said the job ended
    well. A manifest of another run there (the output it was to replace) is not its result: a
    runner that took a job cancelled on it for a finished one would have it reported as such."""
    try:
        written = manifest.read_manifest(output)
    except FileNotFoundError:
        written = None
    if written is not None and written.get("run_id") == run_id:
        return written
    held = "keeps its lease until then; a later run with --break_lease clears what it left"
    if runs_here(pipeline_options):
        _abandon(output, run_id, made_from)
        held = "was given back as it was"
    found = "no output" if written is None else f"the output of run {written.get('run_id')!r}, as before"
    raise RuntimeError(f"{runner_name(pipeline_options)} said the job ended, but it committed nothing: --output "
                       f"{output!r} holds {found}. The job may have been stopped on the runner's side; --output {held}")


def _committed_by(output: str, run_id: str) -> bool:
    """Whether the manifest in ``output`` is run ``run_id``'s: it committed its output there."""
    try:
        return manifest.read_manifest(output).get("run_id") == run_id
    except (OSError, ValueError):
        return False


def _after_commit(output: str, run_id: str, recorded: bool, pipeline_options: PipelineOptions) -> str:
    """What is true of ``output`` once run ``run_id`` committed it and then failed or was
    interrupted (``recorded``: the up-to-date check's state was written)."""
    found = ", and the same command again finds it up to date" if recorded else ""
    holder = lease.read_holder(output)
    if holder is None or holder.run_id != run_id:
        left = "its lease is released"
    elif runs_here(pipeline_options):  # (what abandon could not clear: logged)
        left = (f"its lease is still held, with what it left in {INCOMPLETE_DIR}/: the same command again "
                "clears them (another, with --break_lease)")
    else:
        left = "the job releases its lease as it ends (once it has ended, --break_lease clears what it left)"
    return f"--output {output!r} holds this run's complete output (run {run_id}){found}; {left}"


def _failed_after_commit(error: BaseException, output: str, run_id: str, snapshot, pipeline_options) -> None:
    """Raises :class:`~beam_etl.failure_report.AfterCommit` from ``error`` where run ``run_id``
    had committed ``output`` (what was left, the clean-up, done): the output is its complete
    output, not the earlier one put back. The up-to-date check's state is written first, as the
    run would have, so that its command again leaves the output as it is, as after a run that
    was never interrupted."""
    if not _committed_by(output, run_id):
        return
    recorded = _recorded(snapshot, output, run_id)
    raise failure_report.AfterCommit(error, _after_commit(output, run_id, recorded, pipeline_options)) from error


def _recorded(snapshot, output: str, run_id: str) -> bool:
    """Writes the up-to-date check's state (``snapshot``, None: none) of ``output``, which run
    ``run_id`` committed; returns whether it did. A state that cannot be written (a full disk)
    costs the same command's next run its shortcut, not the output: a note says so."""
    if snapshot is None:
        return False
    try:
        return snapshot.record(run_id)
    except OSError as error:
        print(f"note: --output {output!r} is complete, but the state by which the same command finds it up to "
              f"date could not be written ({error}): that command runs the job again", file=sys.stderr)
        return False


def _run_held(config: JobConfig, pipeline_options: PipelineOptions, holder, made_from: str | None, replaced,
              command_line: dict | None, code: up_to_date.StartingCode, resumed: str = "") -> dict | None:
    """Runs the job into the output ``holder`` holds; returns the manifest it wrote (None: the
    job was submitted and runs on). A run that fails here before its commit gives the output back
    as it was; one that fails or is interrupted after it raises
    :class:`~beam_etl.failure_report.AfterCommit`, which says so. ``resumed``: the dead run it
    resumes, whose output is committed (:func:`_held`)."""
    launch_options = pipeline_options.view_as(options.LaunchOptions)
    cluster = snapshot = None
    os.environ[lease.RUN_ENV] = holder.run_id  # for the processes the run starts (lease.is_resumable)
    try:
        snapshot = (up_to_date.Snapshot(command_line, config.output, sources.local_roots(config), code.job)
                    if command_line is not None and config.use_cache and runs_here(pipeline_options) else None)
        started = time.perf_counter()
        crash.crash_point("after_lease")
        if launch_options.dask_local_workers:
            cluster = _on_local_dask_cluster(pipeline_options, launch_options.dask_local_workers)
        watcher = job_progress.Watcher(config.output, ProgressLine("images"),
                                       lambda: _counted(sources.count_inputs(config, INPUTS_TO_COUNT)))
        with watcher, pipeline_for(local_runner(pipeline_options), pipeline_options) as pipeline:
            _ = pipeline | "Preprocess" >> Preprocess(config, holder.run_id, code.chain, resumed)
    except BaseException as error:
        if cluster is not None:  # its workers stop here: none of them can be mid-commit after this
            cluster.close()
            cluster = None
        if runs_here(pipeline_options):
            _abandon(config.output, holder.run_id, made_from)  # (a committed output is kept: cleared up)
        elif not _committed_by(config.output, holder.run_id):  # the job may still run (and commit) elsewhere
            print(f"note: the job may still be running on {runner_name(pipeline_options)}; --output "
                  f"{config.output!r} keeps its lease until it ends. Once it has, a later run with "
                  "--break_lease clears what it left.", file=sys.stderr)
        _failed_after_commit(error, config.output, holder.run_id, snapshot, pipeline_options)
        raise
    finally:
        if cluster is not None:
            cluster.close()
        os.environ.pop(lease.RUN_ENV, None)
    seconds = time.perf_counter() - started
    if pipeline_options.view_as(StandardOptions).no_wait_until_finish:
        print(f"submitted to {runner_name(pipeline_options)}: the job commits {config.output} (and "
              "releases its lease) when it ends")
        return None
    written = _committed(config.output, holder.run_id, pipeline_options, made_from)
    recorded = False
    try:
        recorded = _recorded(snapshot, config.output, holder.run_id)
        print(summarize(written, seconds, cache_counts(pipeline.result) if config.use_cache else None, replaced))
    except BaseException as error:  # (a Ctrl-C, a standard output that fails)
        told = _after_commit(config.output, holder.run_id, recorded, pipeline_options)
        raise failure_report.AfterCommit(error, told) from error
    return written
