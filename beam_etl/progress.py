"""A progress line for long runs: live on a terminal, periodic plain lines in a log file.

On a terminal the line is redrawn in place (``\\r``, at most a few times a second) and cleared
when the run ends; written to anything else (a file, a pipe, CI's log) it is a whole line every
``every_s`` seconds, so a log never holds a ``\\r``. No Beam, no TensorFlow.
"""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def describe(done: int, total: int | None, unit: str, rate: float) -> str:
    """``"3,200 of 7,390 images done (43%), 410 images/s, about 10 s left"``. Work a runner
    retried (a bundle of a lost worker) counts again: past ``total``, no share is claimed."""
    if not total:
        text = f"{done:,} {unit} done"
    elif done > total:
        text = (f"{done:,} {unit} done, more than the {total:,} found "
                f"(retried work counts again, as do {unit} added since)")
    else:
        text = f"{done:,} of {total:,} {unit} done ({100 * done / total:.0f}%)"
    if rate > 0:
        text += f", {rate:,.0f} {unit}/s"
    if total and rate > 0 and done < total:
        text += f", about {_duration((total - done) / rate)} left"
    return text


class ProgressLine:
    """Shows ``done`` of ``total`` (None: unknown) ``unit`` on ``stream`` (default stderr)."""

    def __init__(self, unit: str, total: int | None = None, stream=None, prefix: str = "beam-etl: ",
                 every_s: float = 10.0, live_every_s: float = 0.2):
        self._stream = stream if stream is not None else sys.stderr
        self._live = bool(getattr(self._stream, "isatty", lambda: False)())
        self._unit, self._total, self._prefix = unit, total, prefix
        self._every = live_every_s if self._live else every_s
        self._started = time.perf_counter()
        self._shown_at = self._started
        self._drawn = False
        self._first = None  # (when, done) of the first progress: the rate counts from there
        self._done = 0

    @property
    def live(self) -> bool:
        return self._live

    def set_total(self, total: int | None) -> None:
        self._total = total

    def message(self, text: str) -> None:
        """A whole line of its own (on a terminal, above the live line)."""
        self._stream.write(("\r\x1b[K" if self._live and self._drawn else "") + self._prefix + text + "\n")
        self._stream.flush()
        self._drawn = False

    def update(self, done: int, force: bool = False) -> None:
        """Shows ``done`` (never less than shown before), if it is time to."""
        now = time.perf_counter()
        self._done = done = max(done, self._done)
        if self._first is None and done:
            self._first = (now, done)
        if not force and now - self._shown_at < self._every:
            return
        self._shown_at = now
        rate = 0.0
        if self._first is not None and now > self._first[0]:
            rate = (done - self._first[1]) / (now - self._first[0])
        text = self._prefix + describe(done, self._total, self._unit, rate)
        if self._live:
            self._stream.write(f"\r{text}\x1b[K")
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Clears a live line (what follows is printed in its place)."""
        if self._live and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
        self._drawn = False
