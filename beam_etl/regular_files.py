"""Reading a local file the job or a reader expects to be a regular file (a manifest, a lineage
file, a cache's segment, an Oxford list): opened without blocking, checked by its own ``fstat``,
and refused unless regular. A FIFO in its place would keep a plain ``open`` waiting for ever for a
writer (a replacing run holding its output's lease meanwhile); a ``stat`` before the ``open``
leaves a moment in which the path may be pointed at one."""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO


class NotRegularFileError(OSError):
    """The path names something that is not a regular file (a FIFO, a device, a socket); it was
    not read. ``file_type``: its type as ``ls -l`` shows it (``p`` for a FIFO)."""

    def __init__(self, path: str, file_type: str):
        super().__init__(f"{path}: not a regular file (file type {file_type!r}); not read")
        self.file_type = file_type


def open_regular(path: str) -> BinaryIO:
    """The local regular file at ``path`` (a link to one included), open for reading (the caller
    closes it). Raises :class:`NotRegularFileError` where it is not one, and ``open``'s own
    OSError where it is not there or not to be read (a folder: IsADirectoryError)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # (a FIFO opens at once)
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):  # (as open() says of one)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(path, stat.filemode(mode)[0])
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read(path: str, offset: int = 0, length: int | None = None) -> bytes:
    """The bytes of the local regular file at ``path`` (:func:`open_regular`) from ``offset``, at
    most ``length`` of them (None: to its end)."""
    with open_regular(path) as handle:
        if length is None:
            handle.seek(offset)
            return handle.read()
        present = os.fstat(handle.fileno()).st_size - offset  # (a length past the end: no buffer for it)
        return os.pread(handle.fileno(), max(0, min(length, present)), offset)
