"""TFRecord framing, to any binary file handle (the sink's are Beam FileSystems', so any path).

Each record is ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``,
little-endian, as TensorFlow's ``TFRecordWriter`` writes it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record, framed."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, struct.pack("<I", masked_crc32c(length)), record,
                     struct.pack("<I", masked_crc32c(record))))


def write_records(handle: BinaryIO, records: Iterable[bytes]) -> int:
    """Writes framed records to an open binary file; returns the bytes written."""
    written = 0
    for record in records:
        framed = frame(record)
        handle.write(framed)
        written += len(framed)
    return written

