"""A command's messages when nobody reads them any more.

``beam-etl preprocess ... | head -1`` closes the pipe behind standard output after one line, and
a log collector that stops does the same to standard error. A message is for whoever reads it:
a write to a pipe nobody reads must neither fail a run (before it starts, or once it has
committed) nor end it. :func:`ignore_gone_readers` makes ``sys.stdout`` and ``sys.stderr`` drop
what they can no longer deliver: from the first write that finds the reader gone, the stream's
descriptor points at ``/dev/null``, so later writes, Python's own at exit included, go nowhere
and raise nothing. No Beam, no TensorFlow.
"""

from __future__ import annotations

import errno
import os
import sys


def is_gone_reader(error: BaseException) -> bool:
    """Whether ``error`` says the reading end of a pipe or socket was closed."""
    return isinstance(error, BrokenPipeError) or (isinstance(error, OSError) and error.errno == errno.EPIPE)


def point_at_null(fd: int) -> None:
    """Makes descriptor ``fd`` write to ``/dev/null`` from now on."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class _Tolerant:
    """A text stream that passes everything to ``stream``, and drops what it writes once the
    reader is gone."""

    def __init__(self, stream):
        self._stream = stream

    def _dropping(self) -> None:
        try:
            point_at_null(self._stream.fileno())
        except (OSError, ValueError, AttributeError):  # (a stream of no descriptor: nothing to point)
            pass

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            if not is_gone_reader(error):
                raise
            self._dropping()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            if not is_gone_reader(error):
                raise
            self._dropping()
            try:  # (what the buffer held now goes to /dev/null)
                self._stream.flush()
            except OSError:
                pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


def ignore_gone_readers() -> None:
    """From now on, ``sys.stdout`` and ``sys.stderr`` drop what a closed pipe cannot take."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Tolerant):
            setattr(sys, name, _Tolerant(stream))
