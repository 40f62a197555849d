"""A disk that refuses a write, without mounting one: with ``RLIMIT_FSIZE`` a write past the
limit fails with EFBIG (Python ignores ``SIGXFSZ``), as one on a full disk fails with ENOSPC, an
``OSError`` that names no file."""

from __future__ import annotations

import contextlib
import resource


@contextlib.contextmanager
def files_at_most(limit: int):
    """This process may make no file larger than ``limit`` bytes in the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def limiting_files_to(limit: int):
    """A ``preexec_fn`` for :mod:`subprocess`: the child may make no file larger than ``limit``."""
    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return limit_files
