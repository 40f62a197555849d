"""Preprocess image-segmentation data into sharded TFRecords, a manifest and a rejected list.

Locally, with the DirectRunner::

    python -m beam_etl.tools.sample_data --output DATA --num_images 200 --seed 0
    python -m pipelines.preprocess --oxford_pets DATA --output OUT --image_size 128
    python -m pipelines.preprocess --images 'DATA/images/*.jpg' \\
        --masks 'DATA/annotations/trimaps/*.png' --output OUT2 --image_size 128 \\
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

On a dask.distributed cluster (``pip install .[dask]``; docs/dask.md)::

    python -m pipelines.preprocess --oxford_pets DATA --output OUT --dask_local_workers 2
    python -m pipelines.preprocess --oxford_pets DATA --output OUT \\
        --runner beam_dask.DaskRunner --dask_client_address HOST:8786

On Dataflow (docs/dataflow.md for the container)::

    python -m pipelines.preprocess --oxford_pets gs://BUCKET/pets --output gs://BUCKET/out \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --sdk_container_image IMAGE
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from beam_etl import failure_report, native_logs, quick_exit, unread_streams
from beam_etl.beam import lean_import, up_to_date, warm_workers  # standard library only: Beam loads in run()

# Loggers whose notes are not the user's business unless --verbose: dask.distributed's start-up
# and shutdown; Beam's Dask runner's note on its partition size (repeated for every step); and
# the runners' relays of a failing step's traceback (from this process and from each worker
# process, several times over), which the command tells in one message instead.
SILENT = logging.CRITICAL + 10
CHATTY_LOGGERS = {"distributed": logging.WARNING, "apache_beam.runners.dask": logging.ERROR,
                  "beam_dask": logging.ERROR, "apache_beam.runners.common": SILENT,
                  "apache_beam.runners.portability.local_job_service": SILENT,
                  "apache_beam.runners.worker.sdk_worker": SILENT,
                  "apache_beam.runners.worker.data_plane": SILENT,
                  "apache_beam.runners.portability.fn_api_runner.worker_handlers": SILENT}


# With none of these, the run may start local worker processes: their warm parent is started
# before Beam loads here (beam_etl.beam.warm_workers), and stopped at once if the run needs none.
_NO_LOCAL_WORKERS = ("--runner", "--dask_local_workers", "--help", "-h")


def may_start_local_workers(argv: list[str]) -> bool:
    return not any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in _NO_LOCAL_WORKERS)


def run(argv: list[str] | None = None, prog: str = "python -m pipelines.preprocess") -> dict | None:
    """Parses ``argv`` (default: the command line) and runs the job; returns the manifest (None
    for a dry run, or a job submitted with ``--no_wait_until_finish``). A rerun that would
    replace an output with the same files (:mod:`beam_etl.beam.up_to_date`) leaves it as it is
    and returns its manifest, before Beam loads."""
    argv = sys.argv[1:] if argv is None else list(argv)
    code = up_to_date.StartingCode.now()  # before any of the job's code that it describes is imported
    current = up_to_date.check(argv, code.job)
    if current is not None:
        print(up_to_date.describe(current))
        return current
    command_line = up_to_date.command_line(argv)  # before the job sets variables of its own
    google_cloud = lean_import.uses_google_cloud(argv)
    if may_start_local_workers(argv):
        warm_workers.start(verbose=native_logs.wants_verbose(argv), google_cloud=google_cloud)
    lean_import.import_beam(google_cloud)
    from beam_etl.beam import launch, options  # pylint: disable=import-outside-toplevel  # loads Beam

    try:
        config, pipeline_options = options.parse_args(
            argv, prog=prog, description=__doc__.split("\n\n", maxsplit=1)[0])
        return launch.launch(config, pipeline_options, command_line, code)
    except Exception:
        warm_workers.stop(until_workers_end=True)  # (a worker killed is written down: the failure names it)
        raise
    finally:
        warm_workers.stop()


def _interrupted(signum, frame):
    """Ctrl-C: from now on only the command's own messages are shown, then KeyboardInterrupt."""
    native_logs.on_interrupt()
    signal.default_int_handler(signum, frame)


def main(argv: list[str] | None = None, prog: str = "python -m pipelines.preprocess") -> int:
    """The command: :func:`run`, with quiet logs, and a failure or a Ctrl-C told in one message
    (the traceback in a log file; ``--verbose`` shows everything instead). Exit status 0, 1 for
    a failed run, 2 for a refused flag or output, 130 after a Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    unread_streams.ignore_gone_readers()  # a message nobody reads fails no run
    verbose = native_logs.wants_verbose(argv)
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        native_logs.filter_native_logs()
        signal.signal(signal.SIGINT, _interrupted)
        # dask.distributed sets its loggers from its config as it loads, in every process
        # (its workers' "Compute Failed" tracebacks too): only an explicit setting is kept.
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
        for name, level in CHATTY_LOGGERS.items():
            logging.getLogger(name).setLevel(level)
    warm_workers.forget_killed()
    threads = failure_report.HeldThreadFailures()
    try:
        with contextlib.nullcontext() if verbose else threads:
            run(argv, prog)
    except SystemExit:  # a refused flag or output (status 2)
        threads.print(sys.stderr)
        raise
    except (KeyboardInterrupt, Exception) as error:  # pylint: disable=broad-except  # told in one message
        killed = warm_workers.killed_workers()
        if verbose:
            if killed:
                print(f"beam-etl: {_killed(killed)}", file=sys.stderr)
            raise
        committed = failure_report.after_commit(error)  # (the run had replaced the output)
        if failure_report.is_interrupt(error):
            told = interrupted_message(argv, committed)
            if threads:
                path = failure_report.write_traceback(error, "preprocess", threads)
                told += f"\n  (what the runner's threads raised is in {path})"
            native_logs.final_message(told)
            return 130
        path = failure_report.write_traceback(error, "preprocess", threads)
        said = failure_report.one_line(error)
        if killed:
            said = f"{_killed(killed)}; the runner said: {said.rstrip('.')}"
            said += "" if committed else ". Run the same command again to go on from what it finished"
        print(f"beam-etl: failed: {said}\n"
              f"  (the traceback is in {path}; --verbose prints it and every log)", file=sys.stderr)
        return 1
    threads.print(sys.stderr)
    return 0


def interrupted_message(argv: list[str], committed: failure_report.AfterCommit | None = None) -> str:
    """What a Ctrl-C of the command ``argv`` tells; ``committed``: the run had committed its
    output, which is what it tells of."""
    if committed is not None:
        return f"beam-etl: interrupted after the commit: {committed.told}."
    reused = ("nothing is reused: --no_cache" if "--no_cache" in argv
              else "the images it finished come from the cache")
    return ("beam-etl: interrupted. A run on this machine puts --output back as it was and releases it; "
            f"run the same command again to start over ({reused}).")


def _killed(workers: list[tuple[int, int]]) -> str:
    """``"worker process 123 died of SIGKILL (...)"``, for each worker process a signal ended."""
    told = []
    for pid, signum in workers:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        told.append(f"worker process {pid} died of {name}")
    text = ", ".join(told)
    if any(signum == signal.SIGKILL for _, signum in workers):
        text += " (the kernel's out-of-memory killer sends SIGKILL: `dmesg` says whether it did)"
    return text


if __name__ == "__main__":
    quick_exit.exit_now(main())
