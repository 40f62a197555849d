"""Edits of a test dataset's input files that keep what a careless change detector looks at."""

from __future__ import annotations

import os
import zlib

import cv2
import numpy as np


def rewrite_in_place(path, data_bytes):
    """New content of the same size with the old modification time put back: what a copy that
    keeps times (``cp -p``, ``rsync -t``) of another version of the file does."""
    st = path.stat()
    assert len(data_bytes) == st.st_size
    path.write_bytes(data_bytes)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def swap_mask_labels(root):
    """Another version of the first mask (its values 1 and 2 swapped), padded to the old size
    with a PNG text chunk, its mtime put back; returns its path."""
    path = sorted((root / "annotations" / "trimaps").glob("*.png"))[0]
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    swapped = np.where(mask == 1, 2, np.where(mask == 2, 1, mask)).astype(mask.dtype)
    encoded = min((cv2.imencode(".png", swapped, [cv2.IMWRITE_PNG_COMPRESSION, level])[1].tobytes()
                   for level in range(10)), key=len)
    pad = path.stat().st_size - len(encoded) - 12 - len(b"pad\0")
    assert pad >= 0, "the new mask does not fit in the old one's size"
    body = b"tEXt" + b"pad\0" + b"x" * pad
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    iend = encoded.rindex(b"IEND") - 4
    rewrite_in_place(path, encoded[:iend] + chunk + encoded[iend:])
    return path
