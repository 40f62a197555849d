"""Fix 7: memory a bundle freed goes back to the operating system (glibc's ``malloc_trim``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Hands the memory that glibc holds free, wherever it lies in its heaps, back to the OS
    (fix 7). ``free`` only returns the top of a heap; blocks freed between long-lived small
    ones (elements waiting for the next shuffle) stay with the process. ``malloc_trim(0)``
    returns every free page, in well under a millisecond. Returns whether it could.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
