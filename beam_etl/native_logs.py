"""Keeps TensorFlow's native start-up chatter off the terminal of a command-line run.

TensorFlow's C++ code logs through absl to file descriptor 2 before any Python logging is set up,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says in the versions this project runs: on a machine without a
GPU every command printed its CUDA probing, an error-level ``failed call to cuInit``, oneDNN and
CPU-feature notes, and a reader's buffer-size note. :func:`filter_native_logs` puts a pipe behind
descriptor 2 and a thread that passes every line through except absl's info and warning lines
(``I1203 17:35:21.123456  1234 file.cc:52] ...``), the known harmless error lines of CUDA
probing, and the tracebacks Beam's worker processes print for a failed bundle (the command says
what failed in one message). Errors and fatal lines pass, and Python's fatal-error dumps go
straight to the terminal. ``--verbose`` on a command leaves descriptor 2 alone. No Beam, no
TensorFlow.
"""

from __future__ import annotations

import atexit
import faulthandler
import logging
import os
import re
import select
import sys
import threading

from beam_etl.unread_streams import is_gone_reader, point_at_null

# absl's prefix: severity, MMDD, hh:mm:ss.micros (before logging is set up, "0000 00:00:<epoch>"),
# thread id, file:line]
NATIVE_LINE = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ ([\w./-]+):\d+\] ")
NATIVE_NOTES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",  # the second line of cpu_feature_guard.cc's note
)
HARMLESS_ERRORS = (b"cuda_platform.cc", b"cuda_executor.cc", b"cuda_diagnostics.cc")  # no GPU here


def is_native_log(line: bytes) -> bool:
    """Whether ``line`` is TensorFlow's (absl's) native chatter, not a message for the user:
    info and warning lines, and the error lines of CUDA probing on a machine without a GPU."""
    match = NATIVE_LINE.match(line)
    if match:
        return match.group(1) in b"IW" or (match.group(1) == b"E" and match.group(2) in HARMLESS_ERRORS)
    return line.startswith(NATIVE_NOTES)


# A Beam worker process prints the traceback of a failed bundle to its stderr (and logs it to the
# launcher, which the command tells in one message): a traceback through this frame is dropped.
WORKER_FRAME = b'apache_beam/runners/worker/sdk_worker.py", line'
_HEADER = b"Traceback (most recent call last):"
_CHAINED = (b"During handling of the above exception", b"The above exception was the direct cause")


class LineFilter:
    """Line by line: drops native chatter and Beam workers' printed tracebacks (whole, chained
    ones included); returns the lines to pass on (without their newlines).

    A traceback ends at its exception line (the first line after its header that is not
    indented). It is held until the next line shows whether another is chained to it, or until
    :meth:`flush` (the caller flushes when nothing more comes for a moment).
    """

    def __init__(self):
        self._group: list[bytes] = []  # the traceback(s) being read
        self._state = "none"  # "frames": inside one; "ended": after its exception line
        self._chained = False  # since it ended: "During handling of the above exception..."

    def feed(self, line: bytes) -> list[bytes]:
        if self._state == "frames":
            self._group.append(line)
            if line and not line[:1].isspace() and line != _HEADER:
                self._state = "ended"  # its exception line
            return []
        if self._state == "ended":
            if not line.strip() or line.startswith(_CHAINED):
                self._group.append(line)
                self._chained = self._chained or line.startswith(_CHAINED)
                return []
            if line == _HEADER and self._chained:
                self._group.append(line)
                self._state, self._chained = "frames", False
                return []
            return self.flush() + self.feed(line)
        if line == _HEADER:
            self._group, self._state, self._chained = [line], "frames", False
            return []
        return [] if is_native_log(line) else [line]

    def flush(self) -> list[bytes]:
        group, self._group, self._state, self._chained = self._group, [], "none", False
        if any(WORKER_FRAME in line for line in group):
            return []
        return [line for line in group if not is_native_log(line)]


_active: dict = {}
_muted = threading.Event()
_drained = threading.Event()
_interrupted = threading.Event()
# After a Ctrl-C, what the command itself says starts with one of these; the rest is the
# interrupted processes' tracebacks.
OWN_PREFIXES = (b"beam-etl:", b"note:", b"error:", b"warning:")
_DRAIN_MARK = b"\x00beam-etl: drained\x00"


def _write(fd: int, data: bytes) -> None:
    """Writes ``data`` to ``fd``; where nobody reads it any more (a pipe closed), to /dev/null
    from then on (:mod:`beam_etl.unread_streams`): the pipe behind descriptor 2 is still
    drained, or every process writing to it would wait once it is full."""
    try:
        os.write(fd, data)
    except OSError as error:
        if not is_gone_reader(error):
            raise
        point_at_null(fd)


def _forward(read_fd: int, target_fd: int) -> None:
    lines_filter = LineFilter()

    def write(lines: list[bytes]) -> None:
        if _interrupted.is_set():
            lines = [line for line in lines if line.startswith(OWN_PREFIXES)]
        if lines and not _muted.is_set():
            _write(target_fd, b"".join(line + b"\n" for line in lines))

    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while True:
            ready, _, _ = select.select([pipe], [], [], 0.5)
            if not ready:  # a quiet moment: a held traceback has nothing chained to it
                write(lines_filter.flush())
                continue
            chunk = pipe.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.endswith(_DRAIN_MARK):  # (after a line left unfinished, if any)
                    write(lines_filter.feed(line[:-len(_DRAIN_MARK)]) if line != _DRAIN_MARK else [])
                    write(lines_filter.flush())
                    _drained.set()
                else:
                    write(lines_filter.feed(line))
        write(lines_filter.flush())
        if pending and not is_native_log(pending) and not _muted.is_set():
            _write(target_fd, pending)


def filter_native_logs() -> None:
    """From now until the process exits, drops native chatter from descriptor 2 (not when
    there is no descriptor 2 to filter)."""
    if _active or sys.stderr is None:
        return
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError):
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    # Python's own fatal-error dumps go straight to the terminal: a crashing process takes the
    # thread that reads the pipe with it.
    faulthandler.enable(file=os.fdopen(os.dup(original), "w", closefd=True))
    thread = threading.Thread(target=_forward, args=(read_fd, original), name="beam_etl_native_logs",
                              daemon=True)
    thread.start()
    _active.update(original=original, thread=thread)
    atexit.register(_restore)


def on_interrupt() -> None:
    """From a Ctrl-C on (this process's SIGINT handler calls it), passes on only the command's
    own messages (:data:`OWN_PREFIXES`): the processes interrupted with it print tracebacks."""
    _interrupted.set()


def final_message(text: str) -> None:
    """After a Ctrl-C: writes ``text`` to the terminal after the command's own messages written
    before it, dropping the tracebacks of the processes interrupted with this one, and whatever
    else comes to descriptor 2 from then on."""
    if not _active:
        print(text, file=sys.stderr, flush=True)
        return
    _interrupted.set()
    try:
        sys.stderr.flush()
        os.write(2, _DRAIN_MARK + b"\n")
        _drained.wait(timeout=2.0)
    except (OSError, ValueError):
        pass
    _muted.set()
    _write(_active["original"], text.encode("utf-8") + b"\n")


def _restore() -> None:
    """Puts descriptor 2 back and lets the thread pass on what is left."""
    if not _active:
        return
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    if _muted.is_set():  # after a Ctrl-C: what threads still print as the process ends is noise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    else:
        os.dup2(_active["original"], 2)  # closes this process's write end of the pipe
    _active["thread"].join(timeout=5)
    _active.clear()


def wants_verbose(argv: list[str]) -> bool:
    return "--verbose" in argv


class DropNotes(logging.Filter):
    """Drops the records that hold one of ``notes``."""

    def __init__(self, notes):
        super().__init__()
        self.notes = tuple(notes)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(note in message for note in self.notes)


def drop_notes(logger_name: str, notes) -> None:
    """From now on, the Python logger ``logger_name`` drops the records that hold one of ``notes``
    (a note the command tells otherwise, or that is no news); once, however often it is called."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, DropNotes) and f.notes == tuple(notes) for f in logger.filters):
        logger.addFilter(DropNotes(notes))
