"""The worker process of a multi-process local run: Beam's own SDK harness
(``apache_beam.runners.worker.sdk_worker_main``), ended with ``os._exit`` once it has returned.

The runner closes its workers one after the other and waits for each process to end. A harness
that has finished its work still takes about half a second to end (the interpreter's teardown:
gRPC's threads, every module's finalizers), so two workers kept the job 1.1 s past its commit.
Nothing is left to it by then: the runner has every bundle's output and the job's files are
closed in ``finish_bundle``; the streams are flushed before the exit. Where the launcher started
a warm parent, the harness runs in a child of it instead (:mod:`beam_etl.beam.warm_workers`).
"""

from __future__ import annotations

import logging
import sys
import traceback

from beam_etl import quick_exit
from beam_etl.beam import lean_import, warm_workers


def command() -> str:
    """The command line the runner starts a worker with (run through a shell, like Beam's)."""
    return f"{sys.executable} -m beam_etl.beam.sdk_worker"


def run_harness() -> int:
    """Runs Beam's harness in this process until its runner lets it go; returns the exit status."""
    try:
        lean_import.import_beam()
        from apache_beam.runners.worker import sdk_worker_main  # pylint: disable=import-outside-toplevel

        sdk_worker_main.main(sys.argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # pylint: disable=broad-except  # as an uncaught one would be
        traceback.print_exc()
        return 1
    return 0


def main() -> None:
    """The worker command: the harness in a child of the warm parent (:mod:`warm_workers`) when
    the launcher started one, here otherwise."""
    status = warm_workers.attach()
    if status is None:
        status = run_harness()
    logging.shutdown()
    quick_exit.end(status)


if __name__ == "__main__":
    main()
