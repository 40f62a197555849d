"""A failed command says what failed in one message; its traceback goes to a file.

Beam re-raises a step's exception with the step's name appended, and a worker process's as a
RuntimeError holding the worker's whole traceback: :func:`one_line` digs the original message
out of either. :func:`write_traceback` keeps the full story in a log file for ``--verbose``-less
runs. No Beam, no TensorFlow.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
import traceback

_STEP = re.compile(r"\s*\[while running '[^']*'\]")
_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)): (.+)$")


def one_line(error: BaseException) -> str:
    """The message of the exception at the root of ``error``, without Beam's additions."""
    text = _STEP.sub("", str(error)).strip()
    if "Traceback (most recent call last)" in text:  # a worker's: its last exception's message
        raised = [match.group(2) for line in text.splitlines() if (match := _RAISED.match(line.strip()))]
        if raised:
            return raised[-1].strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def _causes(error: BaseException):
    """``error``, then what it was raised from or during, and so on."""
    seen = set()
    while error is not None and id(error) not in seen:
        yield error
        seen.add(id(error))
        error = error.__cause__ or error.__context__


def is_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is a Ctrl-C, as raised or as Beam re-raised it from a step (a
    RuntimeError whose message, or whose worker's traceback, ends in KeyboardInterrupt), or
    what was raised from one (:class:`AfterCommit`)."""
    for cause in _causes(error):
        if isinstance(cause, KeyboardInterrupt):
            return True
        lines = [line.strip() for line in _STEP.sub("", str(cause)).splitlines() if line.strip()]
        if lines and lines[-1].split(":")[0].endswith("KeyboardInterrupt"):
            return True
    return False


class AfterCommit(Exception):
    """A run's failure or Ctrl-C (its ``__cause__``) once it had committed its output: ``told``
    says what is true of ``--output`` then (this run's complete output, and what was left to do),
    which the command tells instead of what a run that fails before its commit leaves."""

    def __init__(self, cause: BaseException, told: str):
        super().__init__(f"{one_line(cause).rstrip('.')}, after the commit: {told}")
        self.told = told


def after_commit(error: BaseException) -> AfterCommit | None:
    """The :class:`AfterCommit` that is ``error``, or that Beam re-raised it from; None if none."""
    return next((cause for cause in _causes(error) if isinstance(cause, AfterCommit)), None)


def write_traceback(error: BaseException, command: str, threads: list[str] = ()) -> str:
    """Writes ``error``'s traceback to a new file in the temporary folder, and after it those
    of ``threads`` (:class:`HeldThreadFailures`); returns its path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, path = tempfile.mkstemp(prefix=f"beam-etl-{command}-{stamp}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("".join(traceback.format_exception(error)))
        for failure in threads:
            handle.write("\n" + failure)
    return path


class HeldThreadFailures(list):
    """While held, the exceptions that end threads (the runner's, as it notices a worker is
    gone) are kept here as Python would print them, instead of printed: a failed command writes
    them to its log file (:func:`write_traceback`), a command that did not fail prints them."""

    def __enter__(self):
        self._hook = threading.excepthook
        threading.excepthook = self._keep
        return self

    def _keep(self, args) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        self.append(f"Exception in thread {name}:\n"
                    + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))

    def __exit__(self, *unused):
        threading.excepthook = self._hook

    def print(self, stream) -> None:
        for failure in self:
            stream.write(failure)
