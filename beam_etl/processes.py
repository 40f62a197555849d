"""Whether a process of this host runs (the lease's holder, a worker's launcher, a writer of the
up-to-date state). Standard library only: the worker command and the launch's up-to-date check
use it before Beam loads."""

from __future__ import annotations

import os


def is_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one of another user's too)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (a number no pid can be: none)
        return False
    except PermissionError:
        return True  # (another user's)
    return True
