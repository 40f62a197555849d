"""Decoding of raw image and mask bytes into numpy arrays: pure functions, no Beam.

Images come out as ``uint8[H, W, 3]`` RGB whatever they were stored as (grayscale, palette,
RGBA, CMYK, 16-bit; not 32-bit or floating-point pixels, whose white no header gives), with EXIF
orientation applied. Masks come out as ``uint8[H, W]`` label values, as stored (palette PNGs by
index, not by colour; 1-, 2- and 4-bit PNGs by sample, not scaled to 0-255), with their own
EXIF orientation applied. Bad data raises
:class:`~beam_etl.elements.RejectedInput` with a short reason code; running out of memory, a
fault of the process and not of the file, raises ``MemoryError`` as it is, wherever a decoder
runs: a rejection would be cached under the file's bytes, and a good input rejected in every
later run.

The common cases take the fastest decoders measured (BENCHMARKS.md): RGB and grayscale JPEGs
go to libjpeg-turbo through simplejpeg, with DCT scaling when the output is smaller; 8-bit
grayscale PNG masks go to libspng through pyspng. Everything else goes through Pillow.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import warnings

import numpy as np
import pyspng
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

from beam_etl.elements import RejectedInput

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


def _check_pixels(stage: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RejectedInput(stage, "too_large",
                            f"{width}x{height} = {width * height} pixels exceeds --max_pixels={max_pixels}")


def _oriented(orientation: int, first: int, second: int) -> tuple[int, int]:
    """A (height, width)-like pair as seen after EXIF orientation: swapped for 5-8."""
    return (second, first) if orientation in _TRANSPOSING_ORIENTATIONS else (first, second)


def _jpeg_header_whole(data: bytes) -> bool:
    """Whether a JPEG's marker segments run whole up to its scan (SOS) or an end (EOI): a
    segment that runs past the last byte is a file cut inside its header."""
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return True  # (not a marker: damaged, not cut)
        marker = data[index + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # (a fill byte; markers of no length)
            index += 1 if marker == 0xFF else 2
            continue
        if marker in (0xDA, 0xD9):
            return True
        index += 2 + struct.unpack(">H", data[index + 2:index + 4])[0]
        if index > len(data):
            return False
    return False


def _png_chunk_kinds(data: bytes):
    """The kinds of a PNG's chunks, in order, from their headers (not their data), as far as
    the headers lie within ``data``."""
    index = 8
    while index + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[index:index + 8])
        yield kind
        index += 12 + length


def _png_header_whole(data: bytes) -> bool:
    """Whether a PNG's chunks run whole up to its first image data (IDAT) or its end (IEND)."""
    return any(kind in (b"IDAT", b"IEND") for kind in _png_chunk_kinds(data))


# The formats a header cut short is told in: their first bytes, and whether the header is whole.
_HEADERS = (
    ("JPEG", lambda data: data[:3] == b"\xff\xd8\xff", _jpeg_header_whole),
    ("PNG", lambda data: data[:8] == b"\x89PNG\r\n\x1a\n", _png_header_whole),
    ("GIF", lambda data: data[:6] in (b"GIF87a", b"GIF89a"), lambda data: data.rstrip(b"\0").endswith(b";")),
    ("WebP", lambda data: data[:4] == b"RIFF" and data[8:12] == b"WEBP",
     lambda data: len(data) >= 8 + struct.unpack("<I", data[4:8])[0]),  # (the RIFF size says how long)
    ("BMP", lambda data: data[:2] == b"BM" and data[6:10] == bytes(4),  # (its reserved bytes: no text's)
     lambda data: len(data) >= struct.unpack("<I", data[2:6])[0]),
    ("TIFF", lambda data: data[:4] in (b"II*\0", b"MM\0*"), lambda data: True),  # (no end to tell by)
)


def _header_refused(data: bytes, stage: str, error: Exception) -> RejectedInput:
    """The rejection of a file whose header the decoder cannot read: ``truncated`` where its first
    bytes name a format and the file ends inside its header (a JPEG's or PNG's segments run past
    its last byte; a GIF lacks its trailer; a WebP or BMP is shorter than its header says: a copy
    or upload cut short), ``corrupt_header`` where they name one and the header is whole,
    ``unknown_format`` where they name none."""
    for name, starts, whole in _HEADERS:
        if starts(data):
            if not whole(data):
                return RejectedInput(stage, "truncated",
                                     f"a {name} file cut short inside its header ({len(data)} bytes)")
            return RejectedInput(stage, "corrupt_header",
                                 f"a {name} file whose header cannot be read: {type(error).__name__}: {error}")
    if isinstance(error, UnidentifiedImageError):
        return RejectedInput(stage, "unknown_format",
                             f"not an image format the decoder reads (first bytes {data[:8]!r})")
    return RejectedInput(stage, "corrupt_header", f"unreadable header: {type(error).__name__}: {error}")


def _open(data: bytes, stage: str, max_pixels: int) -> Image.Image:
    if not data:
        raise RejectedInput(stage, "empty_file", "file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except MemoryError:  # (this process's fault, not the file's: the module's docstring)
        raise
    except Exception as error:  # pylint: disable=broad-except  # decoders raise many types on bad data
        raise _header_refused(data, stage, error) from None
    width, height = image.size
    _check_pixels(stage, width, height, max_pixels)
    if width < 1 or height < 1:
        raise RejectedInput(stage, "corrupt_header", f"image has size {width}x{height}")
    return image


def _load(image: Image.Image, stage: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF; the data is still usable
            image.load()
    except MemoryError:  # (this process's fault, not the file's: the module's docstring)
        raise
    except Exception as error:  # pylint: disable=broad-except  # decoders raise many types on bad data
        reason = "truncated" if "truncated" in str(error) or isinstance(error, EOFError) else "corrupt_data"
        raise RejectedInput(stage, reason,
                            f"cannot decode pixels: {type(error).__name__}: {error}") from None


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except MemoryError:  # (this process's fault, not the file's: the module's docstring)
        raise
    except Exception:  # pylint: disable=broad-except  # malformed EXIF: treat as upright
        return 1


def decode_image(data: bytes, *, max_pixels: int,
                 min_size: tuple[int, int] | None = None) -> DecodedImage:
    """Decodes an image to RGB ``uint8[H, W, 3]``.

    With ``min_size=(h, w)``, a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8)
    that still gives at least that size: several times faster when the output is small.
    """
    if data[:3] == _JPEG_SIGNATURE:
        decoded = _decode_jpeg_fast(data, max_pixels, min_size)
        if decoded is not None:
            return decoded
    image = _open(data, "decode_image", max_pixels)
    orientation = _orientation(image)
    height, width = _oriented(orientation, image.height, image.width)
    if min_size is not None and image.format == "JPEG":
        want_h, want_w = _oriented(orientation, *min_size)
        image.draft("RGB", (want_w, want_h))
    _load(image, "decode_image")
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    pixels = _to_rgb(image)
    return DecodedImage(pixels=pixels, height=height, width=width)


_JPEG_SIGNATURE = b"\xff\xd8\xff"
_FAST_COLORSPACES = ("RGB", "YCbCr", "Gray")  # CMYK/YCCK need Adobe's inversion: Pillow does it


def _jpeg_orientation(data: bytes) -> int:
    # Only images carrying EXIF pay for parsing it: most datasets have none.
    if data.find(b"Exif\x00\x00", 0, 1 << 16) == -1:
        return 1
    return _orientation(Image.open(io.BytesIO(data)))


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """numpy equivalent of ``ImageOps.exif_transpose`` for orientations 2-8 (of an image's or a
    mask's pixels)."""
    transforms = {
        2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1], 8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transforms[orientation](pixels)) if orientation in transforms else pixels


def _decode_jpeg_fast(data: bytes, max_pixels: int, min_size) -> DecodedImage | None:
    """libjpeg-turbo decode, or None to let Pillow handle (and diagnose) the file."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in _FAST_COLORSPACES:
        return None
    _check_pixels("decode_image", width, height, max_pixels)
    orientation = _jpeg_orientation(data)
    height, width = _oriented(orientation, height, width)
    kwargs = {}
    if min_size is not None:
        want_h, want_w = _oriented(orientation, *min_size)
        kwargs = {"min_height": want_h, "min_width": want_w}
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", **kwargs)
    except ValueError as error:
        reason = "truncated" if "Premature end" in str(error) else "corrupt_data"
        raise RejectedInput("decode_image", reason, f"cannot decode pixels: {error}") from None
    return DecodedImage(pixels=_apply_orientation(pixels, orientation), height=height, width=width)


# Formats whose 32-bit integer mode ("I") holds at most 16-bit samples: a 16-bit PGM, and a 16-bit
# PNG as Pillow opened it before it had "I;16" for them.
_SIXTEEN_BIT_AT_MOST = ("PNG", "PPM")


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L") or (image.mode == "I" and image.format in _SIXTEEN_BIT_AT_MOST):
        # 16-bit: scaled by its depth, the same for every image
        gray = np.rint(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        raise RejectedInput("decode_image", "unsupported_mode",
                            f"{'32-bit integer' if image.mode == 'I' else 'floating-point'} pixels "
                            f"(mode {image.mode!r}) have no range that says which value is white")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_gray8_png(data: bytes) -> bool:
    """An 8-bit grayscale PNG, from its IHDR chunk: the usual mask, and libspng's fast case."""
    return (len(data) >= 33 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR"
            and data[24] == 8 and data[25] == 0)


def _png_gray_depth(data: bytes) -> int | None:
    """The bit depth of a grayscale PNG, from its IHDR chunk; None for any other file."""
    if len(data) >= 33 and data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and data[25] == 0:
        return data[24]
    return None


def _mask_orientation(data: bytes) -> int:
    """A mask's own EXIF orientation (a PNG's ``eXIf`` chunk, a JPEG's or a TIFF's tag); only a
    file that may carry one is parsed for it."""
    if data[:8] == _PNG_SIGNATURE:
        before_its_end = (kind for kind in _png_chunk_kinds(data) if kind in (b"eXIf", b"IEND"))
        if next(before_its_end, None) != b"eXIf":
            return 1
    elif data[:3] == _JPEG_SIGNATURE:
        return _jpeg_orientation(data)
    try:
        return _orientation(Image.open(io.BytesIO(data)))
    except MemoryError:  # (this process's fault, not the file's: the module's docstring)
        raise
    except Exception:  # pylint: disable=broad-except  # (decoded already: its pixels are read)
        return 1


def decode_mask(data: bytes, *, max_pixels: int) -> np.ndarray:
    """Decodes a segmentation mask to ``uint8[H, W]`` class values, with its own EXIF
    orientation applied, as an image's is: each file as a viewer shows it."""
    values = _mask_values(data, max_pixels)
    orientation = _mask_orientation(data)
    return _apply_orientation(values, orientation) if orientation != 1 else values


def _mask_values(data: bytes, max_pixels: int) -> np.ndarray:
    if _is_gray8_png(data):
        _check_pixels("decode_mask", *struct.unpack(">II", data[16:24]), max_pixels)
        try:
            return pyspng.load(data)
        except RuntimeError as error:
            reason = "truncated" if "end of stream" in str(error) else "corrupt_data"
            raise RejectedInput("decode_mask", reason, f"cannot decode mask: {error}") from None
    image = _open(data, "decode_mask", max_pixels)
    mode = image.mode
    _load(image, "decode_mask")
    depth = _png_gray_depth(data)
    if mode == "L" and depth in (2, 4):
        # Pillow scales 2- and 4-bit samples to 0-255 (3 -> 255); a mask's samples are its labels
        return np.asarray(image) // (255 // (2**depth - 1))
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
