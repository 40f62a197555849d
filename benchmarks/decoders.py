"""Which libraries to decode, resize and encode with: the candidates side by side on the same files.

    python -m benchmarks.decoders --num_images 300

Prints ms per image, one process, for JPEG decoding (full size and shrunk for a 128x128
output), PNG mask decoding, resizing, and encoding the 128x128 records (with the bytes each
encoder makes). beam_etl uses the fastest of each (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import cv2
import numpy as np
import pyspng
import simplejpeg
from PIL import Image

from beam_etl.image import encoding
from benchmarks.common import ensure_dataset

cv2.setNumThreads(1)


def _ms(function, items, repeats=3) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for item in items:
            function(item)
    return (time.perf_counter() - started) * 1000 / repeats / len(items)


def _pillow_draft(data):
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (128, 128))
    return np.asarray(image.convert("RGB"))


def _pillow_encoded(pixels, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **options)
    return buffer.getvalue()


def _opencv_encoded(pixels, extension, *params) -> bytes:
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return cv2.imencode(extension, pixels, list(params))[1].tobytes()


def encoders(images, masks) -> list[tuple[str, float, float]]:
    """(name, ms, mean bytes) of each candidate encoding the records' pixels; the job's choices
    are timed through its own functions (:mod:`beam_etl.image.encoding`)."""
    candidates = [
        ("jpeg q95: Pillow", images, lambda a: _pillow_encoded(a, format="JPEG", quality=95)),
        ("jpeg q95: OpenCV", images, lambda a: encoding.encode_image(a, "jpeg", 95)),
        ("png mask: Pillow level 1", masks, lambda a: _pillow_encoded(a, format="PNG", compress_level=1)),
        ("png mask: OpenCV level 1", masks, lambda a: _opencv_encoded(a, ".png", cv2.IMWRITE_PNG_COMPRESSION, 1)),
        ("png mask: OpenCV level 1 unfiltered", masks, lambda a: encoding.encode_mask(a, "png")),
        ("png image: Pillow level 1", images, lambda a: _pillow_encoded(a, format="PNG", compress_level=1)),
        ("png image: OpenCV level 1", images, lambda a: _opencv_encoded(a, ".png", cv2.IMWRITE_PNG_COMPRESSION, 1)),
        ("png image: OpenCV level 1 fast filters", images, lambda a: encoding.encode_image(a, "png")),
    ]
    return [(name, _ms(encode, items), float(np.mean([len(encode(item)) for item in items])))
            for name, items, encode in candidates]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "beam-etl-bench-data"))
    args = parser.parse_args(argv)
    records = ensure_dataset(args.data, 4000)[: args.num_images]
    jpegs = [open(r.image_uri, "rb").read() for r in records]
    pngs = [open(r.mask_uri, "rb").read() for r in records]
    rows = [
        ("jpeg full: Pillow", _ms(lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")), jpegs)),
        ("jpeg full: simplejpeg", _ms(lambda d: simplejpeg.decode_jpeg(d), jpegs)),
        ("jpeg full: OpenCV", _ms(lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), jpegs)),
        ("jpeg >=128: Pillow draft", _ms(_pillow_draft, jpegs)),
        ("jpeg >=128: simplejpeg min_size", _ms(lambda d: simplejpeg.decode_jpeg(d, min_height=128, min_width=128), jpegs)),
        ("png mask: Pillow", _ms(lambda d: np.asarray(Image.open(io.BytesIO(d))), pngs)),
        ("png mask: pyspng", _ms(pyspng.load, pngs)),
        ("png mask: OpenCV", _ms(lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_UNCHANGED), pngs)),
    ]
    shrunk = [simplejpeg.decode_jpeg(d, min_height=128, min_width=128) for d in jpegs]
    masks = [pyspng.load(d) for d in pngs]
    rows += [
        ("resize to 128: Pillow bilinear", _ms(lambda a: np.asarray(Image.fromarray(a).resize((128, 128), Image.Resampling.BILINEAR)), shrunk)),
        ("resize to 128: OpenCV area", _ms(lambda a: cv2.resize(a, (128, 128), interpolation=cv2.INTER_AREA), shrunk)),
        ("resize to 128: OpenCV linear", _ms(lambda a: cv2.resize(a, (128, 128), interpolation=cv2.INTER_LINEAR), shrunk)),
        ("mask to 128: Pillow nearest", _ms(lambda a: np.asarray(Image.fromarray(a).resize((128, 128), Image.Resampling.NEAREST)), masks)),
        ("mask to 128: OpenCV nearest-exact", _ms(lambda a: cv2.resize(a, (128, 128), interpolation=cv2.INTER_NEAREST_EXACT), masks)),
    ]
    print(f"{len(records)} images from sample_data (mean {np.mean([len(j) for j in jpegs]) / 1024:.0f} KB JPEG), ms per image")
    for name, ms in rows:
        print(f"{name:>40} {ms:7.3f}")
    small = [cv2.resize(a, (128, 128), interpolation=cv2.INTER_LINEAR) for a in shrunk]
    small_masks = [cv2.resize(a, (128, 128), interpolation=cv2.INTER_NEAREST_EXACT) for a in masks]
    print("encoding the 128x128 records: ms per image, mean bytes")
    for name, ms, size in encoders(small, small_masks):
        print(f"{name:>40} {ms:7.3f} {size:8,.0f}")


if __name__ == "__main__":
    main()
