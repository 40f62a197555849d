"""A disk that refuses a write, without mounting one: with ``RLIMIT_FSIZE`` a write past the
limit fails with EFBIG (Python ignores ``SIGXFSZ``), as one on a full disk fails with ENOSPC, an
``OSError`` that names no file."""

from __future__ import annotations

import contextlib
import resource
import sys


@contextlib.contextmanager
def files_at_most(limit: int):
    """This process may make no file larger than ``limit`` bytes in the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def module_command(module: str, limit: int) -> list[str]:
    """``python -m module`` (arguments to follow) in a process that may make no file larger than
    ``limit`` bytes: the limit set in the child as it starts, not between a fork and an exec of
    a parent holding threads."""
    code = ("import resource, runpy, sys\n"
            "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), hard))\n"
            f"sys.argv = [{module!r}, *sys.argv[2:]]\n"
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", code, str(limit)]
