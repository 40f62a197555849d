"""Ending a command's process without the interpreter's teardown.

Once a command has done its work, finalizing the 2,000-odd modules that Beam (or TensorFlow)
loads takes about half a second more, after the last line is printed. :func:`exit_now` runs what
the process registered to run at exit (``atexit``: the log filter of :mod:`beam_etl.native_logs`
passes on its last lines there), flushes the standard streams and ends the process. Only the
command-line entry points call it: a file the command wrote is closed before it returns.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_now(status: int | None) -> NoReturn:
    """Ends the process with ``status`` (None: 0) once the exit handlers have run."""
    atexit._run_exitfuncs()  # pylint: disable=protected-access  # what Python runs at exit, first
    end(status)


def end(status: int | None) -> NoReturn:
    """Flushes the standard streams and ends the process with ``status`` (None: 0) at once, no
    exit handler run: what a worker forked from a warm parent does (the handlers are the
    parent's)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(status or 0)  # pylint: disable=protected-access
