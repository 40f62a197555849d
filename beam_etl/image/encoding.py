"""Encoding of output pixels into the bytes stored in the records: pure functions, no Beam."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# zlib level 1: masks are a few distinct values, so level 1 is within a few percent of
# level 9 in size and several times faster.
PNG_COMPRESS_LEVEL = 1


def encode_image(pixels: np.ndarray, image_format: str, jpeg_quality: int = 95) -> bytes:
    """``uint8[H, W, 3]`` -> JPEG, PNG, or raw row-major bytes."""
    if image_format == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    elif image_format == "png":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        raise ValueError(f"unknown image format {image_format!r}")
    return buffer.getvalue()


def encode_mask(mask: np.ndarray, mask_format: str) -> bytes:
    """``uint8[H, W]`` -> lossless PNG (single channel) or raw bytes."""
    if mask_format == "raw":
        return np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    if mask_format != "png":
        raise ValueError(f"masks are stored losslessly, as png or raw, got {mask_format!r}")
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
