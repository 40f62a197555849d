"""Keeps TensorFlow's native start-up chatter off the terminal of a command-line run.

TensorFlow's C++ code logs through absl to file descriptor 2 before any Python logging is set up,
whatever ``TF_CPP_MIN_LOG_LEVEL`` says in the versions this project runs: on a machine without a
GPU every command printed its CUDA probing, an error-level ``failed call to cuInit``, oneDNN and
CPU-feature notes, and a reader's buffer-size note. :func:`filter_native_logs` puts a pipe behind
descriptor 2 and a thread that passes every line through except those in absl's native format
(``I1203 17:35:21.123456  1234 file.cc:52] ...``) and their known continuation lines, and the
tracebacks Beam's worker processes print for a failed bundle (the command says what failed in one
message); everything else passes unchanged. ``--verbose`` on a command
leaves descriptor 2 alone. No Beam, no TensorFlow.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl's prefix: severity, MMDD, hh:mm:ss.micros (before logging is set up, "0000 00:00:<epoch>"),
# thread id, file:line]
NATIVE_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] ")
NATIVE_NOTES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"To enable the following instructions:",  # the second line of cpu_feature_guard.cc's note
)


def is_native_log(line: bytes) -> bool:
    """Whether ``line`` is TensorFlow's (absl's) native logging, not a message for the user."""
    return bool(NATIVE_LINE.match(line)) or line.startswith(NATIVE_NOTES)


# A Beam worker process prints the traceback of a failed bundle to its stderr (and logs it to the
# launcher, which the command tells in one message): a traceback through this frame is dropped.
WORKER_FRAME = b'apache_beam/runners/worker/sdk_worker.py", line'
_CHAINED = (b"During handling of the above exception", b"The above exception was the direct cause")


class LineFilter:
    """Line by line: drops native log lines and Beam workers' printed tracebacks (whole, chained
    ones included); returns the lines to pass on (without their newlines)."""

    def __init__(self):
        self._block: list[bytes] | None = None  # a traceback being read
        self._blank = False  # the block's last line was blank: it ends unless a chained one follows

    def feed(self, line: bytes) -> list[bytes]:
        if self._block is not None:
            if self._blank and not line.startswith(_CHAINED) and line != b"Traceback (most recent call last):":
                return self._end_block() + self.feed(line)
            self._block.append(line)
            self._blank = not line.strip()
            return []
        if line == b"Traceback (most recent call last):":
            self._block, self._blank = [line], False
            return []
        return [] if is_native_log(line) else [line]

    def _end_block(self) -> list[bytes]:
        block, self._block, self._blank = self._block, None, False
        if any(WORKER_FRAME in line for line in block):
            return []
        return [line for line in block if not is_native_log(line)]

    def flush(self) -> list[bytes]:
        return self._end_block() if self._block is not None else []


_active: dict = {}


def _forward(read_fd: int, target_fd: int) -> None:
    lines_filter = LineFilter()

    def write(lines: list[bytes]) -> None:
        if lines and not _muted.is_set():
            os.write(target_fd, b"".join(line + b"\n" for line in lines))

    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            write([kept for line in lines for kept in lines_filter.feed(line)])
        write(lines_filter.flush())
        if pending and not is_native_log(pending) and not _muted.is_set():
            os.write(target_fd, pending)


_muted = threading.Event()


def final_message(text: str) -> None:
    """Writes ``text`` to the terminal and drops whatever else comes to descriptor 2 from now
    on: after a Ctrl-C, the tracebacks of worker processes interrupted with this one."""
    if _active:
        _muted.set()
        os.write(_active["original"], text.encode("utf-8") + b"\n")
    else:
        print(text, file=sys.stderr, flush=True)


def filter_native_logs() -> None:
    """From now until the process exits, drops native log lines from descriptor 2."""
    if _active:
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, original), name="beam_etl_native_logs",
                              daemon=True)
    thread.start()
    _active.update(original=original, thread=thread)
    atexit.register(_restore)


def _restore() -> None:
    """Puts descriptor 2 back and lets the thread pass on what is left."""
    if not _active:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_active["original"], 2)  # closes this process's write end of the pipe
    _active["thread"].join(timeout=5)
    _active.clear()


def wants_verbose(argv: list[str]) -> bool:
    return "--verbose" in argv
