"""How far a run is, on every runner: the workers say it in small files, the launcher adds them up.

Each instance of the per-image step (:class:`Reporter`) writes how many inputs it has handled to
its own file in ``OUT/.incomplete/progress/`` (at most every second, every five on an object
store, and when its bundle ends). The launcher (:class:`Watcher`) reads them on a thread and
shows the sum on a :class:`beam_etl.progress.ProgressLine`, against the number of inputs the
sources listed at launch when they could say. The files go through Beam's FileSystems, so this
works wherever the workers run (in this process, worker processes, a Dask cluster, Dataflow
writing to ``gs://``); the commit deletes them with the rest of ``.incomplete/``. On Dataflow
the step's counters (``inputs``, ``written_<split>``, ...) show the same in its console.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from beam_etl.beam import filesystem
from beam_etl.output_layout import PROGRESS_DIR, join
from beam_etl.progress import ProgressLine


def _interval(output: str) -> float:
    return 1.0 if filesystem.is_local(output) else 5.0


class Reporter:
    """A worker's count of inputs handled, written to its file now and then."""

    def __init__(self, output: str):
        self._path = join(output, f"{PROGRESS_DIR}/{uuid.uuid4().hex}.json")
        self._interval = _interval(output)
        self._local = filesystem.is_local(output)
        self._done = 0
        self._written_at = float("-inf")  # the first input is reported at once

    def add(self, count: int = 1) -> None:
        self._done += count
        if time.monotonic() - self._written_at >= self._interval:
            self.flush()

    def bundle_done(self) -> None:
        """At the end of a bundle: written now locally (a small file), by the interval on an
        object store (not an object per bundle)."""
        if self._local:
            self.flush()
        else:
            self.add(0)

    def flush(self) -> None:
        if not self._done:
            return
        try:
            filesystem.write_bytes(self._path, json.dumps({"done": self._done}).encode("utf-8"))
        except Exception:  # pylint: disable=broad-except  # progress must never fail the job
            pass
        self._written_at = time.monotonic()


def read_done(output: str) -> int:
    """The inputs handled so far, over every worker's file."""
    directory = join(output, PROGRESS_DIR)
    done = 0
    try:
        names = filesystem.list_files(directory)
    except Exception:  # pylint: disable=broad-except  # not there yet
        return 0
    for name in names:
        try:
            done += int(json.loads(filesystem.read_bytes(join(directory, name)))["done"])
        except Exception:  # pylint: disable=broad-except  # being written, or gone with the commit
            continue
    return done


class Watcher:
    """Shows the run's progress on ``line`` until stopped (use as a context manager).
    ``count_inputs()`` (None: the sources cannot say) is called on the watcher's thread first,
    so a long listing does not hold the run up."""

    def __init__(self, output: str, line: ProgressLine, count_inputs=None):
        self._output = output
        self._line = line
        self._count_inputs = count_inputs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="beam_etl_progress", daemon=True)

    def _watch(self):
        if self._count_inputs is not None:
            try:
                total = self._count_inputs()
            except Exception:  # pylint: disable=broad-except  # the job itself reports unreadable sources
                total = None
            if total and not self._stop.is_set():
                self._line.set_total(total)
                # (the images the sources list: the summary's inputs count a mask without its image too)
                self._line.message(f"{total:,} images found")
        interval = _interval(self._output)
        while not self._stop.wait(interval):
            self._line.update(read_done(self._output))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *unused):
        self._stop.set()
        self._thread.join(timeout=1.0)  # (a listing of the sources may still run: it is a daemon)
        self._line.close()
