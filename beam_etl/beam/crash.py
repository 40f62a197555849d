"""The test-only crash hook: ``BEAM_ETL_CRASH_AT=<point>`` kills the job's process with SIGKILL
at one of :data:`CRASH_POINTS`, as a crashing machine would; ``<point>:SIGINT`` interrupts it
there instead (a Ctrl-C), ``<point>:SIGSTOP`` stops it there until a ``SIGCONT`` (for a test to
change something meanwhile), and ``outcomes:N`` kills it once this process has computed and
cached its N-th input's outcome (a run killed half way through its images)."""

from __future__ import annotations

import os
import signal

CRASH_POINTS = ("lease_taken", "after_lease", "outcomes", "before_commit", "old_manifest_out", "old_files_out",
                "new_files_in", "manifest_in")


def crash_point(name: str, count: int | None = None) -> None:
    """Kills or interrupts this process when ``BEAM_ETL_CRASH_AT`` names ``name`` (and, for a
    counted point, ``count``). A name that is not a crash point, in the code or in the variable,
    is an error: a misspelt one would never crash, and a test of it would pass unknowing."""
    point, _, how = os.environ.get("BEAM_ETL_CRASH_AT", "").partition(":")
    for named in (name, point or name):
        if named not in CRASH_POINTS:
            raise ValueError(f"{named!r} is not a crash point: {', '.join(CRASH_POINTS)}")
    if point != name:
        return
    if count is not None:
        if how == str(count):
            os.kill(os.getpid(), signal.SIGKILL)
        return
    os.kill(os.getpid(), {"SIGINT": signal.SIGINT, "SIGSTOP": signal.SIGSTOP}.get(how, signal.SIGKILL))
