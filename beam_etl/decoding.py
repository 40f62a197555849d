"""Decoding of raw image and mask bytes into numpy arrays: pure functions, no Beam.

Images come out as ``uint8[H, W, 3]`` RGB whatever they were stored as (grayscale, palette,
RGBA, CMYK, 16-bit), with EXIF orientation applied. Masks come out as ``uint8[H, W]`` label
values (palette PNGs by index, not by colour). Bad data raises
:class:`~beam_etl.records.RejectedInput` with a short reason code.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from beam_etl.records import RejectedInput

# Pillow refuses images above ~179 Mpx with its own error; --max_pixels is our guard instead,
# checked from the header before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

# EXIF orientations 5-8 swap width and height.
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """Pixels, and the full-resolution (height, width) after EXIF orientation.

    ``pixels`` may be smaller than (height, width) when the JPEG decoder scaled it down
    while decoding (DCT scaling); validation compares masks with the full size.
    """

    pixels: np.ndarray
    height: int
    width: int
    format: str


def _open(data: bytes, stage: str, max_pixels: int) -> Image.Image:
    if not data:
        raise RejectedInput(stage, "empty_file", "file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedInput(stage, "unknown_format",
                            f"not an image format the decoder reads (first bytes {data[:8]!r})") from None
    except Exception as error:  # pylint: disable=broad-except  # decoders raise many types on bad data
        raise RejectedInput(stage, "corrupt_header",
                            f"unreadable header: {type(error).__name__}: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise RejectedInput(stage, "too_large",
                            f"{width}x{height} = {width * height} pixels exceeds --max_pixels={max_pixels}")
    if width < 1 or height < 1:
        raise RejectedInput(stage, "corrupt_header", f"image has size {width}x{height}")
    return image


def _load(image: Image.Image, stage: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF; the data is still usable
            image.load()
    except Exception as error:  # pylint: disable=broad-except  # decoders raise many types on bad data
        reason = "truncated" if "truncated" in str(error) or isinstance(error, EOFError) else "corrupt_data"
        raise RejectedInput(stage, reason,
                            f"cannot decode pixels: {type(error).__name__}: {error}") from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # pylint: disable=broad-except  # malformed EXIF: treat as upright
        return 1


def decode_image(data: bytes, *, max_pixels: int,
                 min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decodes an image to RGB ``uint8[H, W, 3]``.

    With ``min_size=(h, w)``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
    that still gives at least that size: several times faster when the output is small.
    """
    image = _open(data, "decode_image", max_pixels)
    source_format = (image.format or "unknown").lower()
    orientation = _orientation(image)
    width, height = image.size
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    if min_size is not None and image.format == "JPEG":
        want_h, want_w = min_size
        if orientation in _TRANSPOSING_ORIENTATIONS:
            want_h, want_w = want_w, want_h
        image.draft("RGB", (want_w, want_h))
    _load(image, "decode_image")
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    pixels = _to_rgb(image)
    return DecodedImage(pixels=pixels, height=height, width=width, format=source_format)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def decode_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decodes a segmentation mask to ``uint8[H, W]`` class values."""
    image = _open(data, "decode_mask", max_pixels)
    _load(image, "decode_mask")
    mode = image.mode
    if mode in ("L", "P"):
        return np.asarray(image)  # palette PNG: the indices are the labels
    if mode == "1":
        return np.asarray(image).astype(np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image)
        if values.min(initial=0) < 0 or values.max(initial=0) > 255:
            raise RejectedInput("decode_mask", "mask_values",
                                f"{mode} mask has values outside 0-255 "
                                f"(min {values.min()}, max {values.max()})")
        return values.astype(np.uint8)
    if mode in ("LA", "RGB", "RGBA"):
        values = np.asarray(image)
        channels = values[:, :, : (1 if mode == "LA" else 3)]
        if np.any(channels != channels[:, :, :1]):
            raise RejectedInput("decode_mask", "not_single_channel",
                                f"{mode} mask whose channels differ: a mask holds one label per pixel")
        return np.ascontiguousarray(channels[:, :, 0])
    raise RejectedInput("decode_mask", "unsupported_mode", f"mask mode {mode!r} is not supported")
