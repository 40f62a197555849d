"""Encoding of output pixels into the bytes stored in the records: pure functions, no Beam.

OpenCV encodes (``benchmarks/decoders.py``, BENCHMARKS.md): its JPEGs are Pillow's byte for byte
at the same quality and 4:2:0 chroma (both are libjpeg-turbo with its defaults) at two thirds of
the time, and its PNG encoder lets the row filters be chosen.
"""

from __future__ import annotations

import cv2
import numpy as np

# zlib level 1: masks are a few distinct values, so level 1 is within a few percent of
# level 9 in size and several times faster.
PNG_COMPRESS_LEVEL = 1
# PNG row filters. A mask is runs of a few values, which deflate packs as they are: unfiltered
# rows are both smaller and about three times faster than choosing a filter for each row. A photo
# needs a filter: the cheap ones (none, sub, up) tried per row give the size of all five.
_MASK_PNG = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
_IMAGE_PNG = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FAST_FILTERS]


def _encoded(extension: str, pixels: np.ndarray, params: list[int]) -> bytes:
    ok, encoded = cv2.imencode(extension, pixels, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {pixels.shape} {pixels.dtype} pixels as {extension}")
    return encoded.tobytes()


def _bgr(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels in OpenCV's channel order (any strides: a flipped view too)."""
    return cv2.cvtColor(np.ascontiguousarray(pixels, dtype=np.uint8), cv2.COLOR_RGB2BGR)


def encode_image(pixels: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """``uint8[H, W, 3]`` RGB -> JPEG (4:2:0), PNG, or raw row-major bytes."""
    if image_format == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    if image_format == "jpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
        return _encoded(".jpg", _bgr(pixels), params)
    if image_format == "png":
        return _encoded(".png", _bgr(pixels), _IMAGE_PNG)
    raise ValueError(f"unknown image format {image_format!r}")


def encode_mask(mask: np.ndarray, mask_format: str) -> bytes:
    """``uint8[H, W]`` -> lossless PNG (8-bit grayscale) or raw bytes."""
    if mask_format == "raw":
        return np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    if mask_format != "png":
        raise ValueError(f"masks are stored losslessly, as png or raw, got {mask_format!r}")
    return _encoded(".png", np.ascontiguousarray(mask, dtype=np.uint8), _MASK_PNG)
