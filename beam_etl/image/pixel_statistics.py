"""Each training example's share of the job's statistics, computed where its pixels already are,
and their exact sum. numpy, OpenCV and simplejpeg; no Beam or TensorFlow.

An example's share (:class:`ExampleSums`, about a hundred bytes) holds per-channel sums of its
pixels and of their squares, the number of pixels of each mask value, and its class name. The
job sums the shares of the training split's original examples (:class:`Totals`, exact in
int64) and turns the totals into the manifest's ``statistics`` and the transform graph's
assets (:mod:`beam_etl.loader.transform_graph`).

The pixels summed are those a reader of the records decodes: for JPEG records the encoded bytes
are decoded again here as ``tf.io.decode_jpeg`` decodes them by default, bit for bit
(libjpeg-turbo, its fast integer DCT and fancy upsampling; a test holds the two equal), for PNG
and raw records they are the pixels that were encoded, losslessly.
"""

from __future__ import annotations

import collections
import dataclasses

import cv2
import numpy as np
import simplejpeg

NUM_MASK_VALUES = 256  # masks are uint8
FLOAT32_EXACT = 1 << 24  # OpenCV's histograms count in float32: exact below this many pixels


@dataclasses.dataclass(frozen=True)
class ExampleSums:
    """One example's share of the statistics."""

    channel_sum: tuple[int, ...]
    channel_sum_squares: tuple[int, ...]
    mask_values: tuple[int, ...]  # the values its mask holds, increasing
    mask_pixels: tuple[int, ...]  # how many pixels hold each
    label_name: str


def decoded_record_pixels(pixels: np.ndarray, encoded: bytes, image_format: str) -> np.ndarray:
    """The pixels a reader of the record gets: ``encoded`` decoded for JPEG, else ``pixels``."""
    if image_format == "jpeg":
        return simplejpeg.decode_jpeg(encoded, colorspace="RGB", fastdct=True, fastupsample=False)
    return pixels


def example_sums(pixels: np.ndarray, mask: np.ndarray, label_name: str) -> ExampleSums:
    """``uint8[H, W, C]`` pixels (C at most 4) and ``uint8[H, W]`` mask -> their share, exactly:
    OpenCV's sums and squared norms are float64, exact for integers below 2**53 (a sum of squares
    reaches that only past 138 billion pixels), and its histogram float32, exact below 2**24
    pixels (past that, numpy counts)."""
    channels = pixels.shape[-1]
    pixels = np.ascontiguousarray(pixels)
    sums = cv2.sumElems(pixels)[:channels]
    # (a channel's squared L2 norm: no int32 image of the squares to allocate, 30 us at 128x128)
    squares = [cv2.norm(cv2.extractChannel(pixels, channel), cv2.NORM_L2SQR) for channel in range(channels)]
    mask = np.ascontiguousarray(mask)
    if mask.size < FLOAT32_EXACT:
        counts = cv2.calcHist([mask], [0], None, [NUM_MASK_VALUES], [0, NUM_MASK_VALUES]).ravel()
    else:
        counts = np.bincount(mask.ravel(), minlength=NUM_MASK_VALUES)
    present = np.flatnonzero(counts)
    return ExampleSums(
        channel_sum=tuple(int(round(v)) for v in sums),
        channel_sum_squares=tuple(int(round(v)) for v in squares),
        mask_values=tuple(present.tolist()),
        mask_pixels=tuple(counts[present].astype(np.int64).tolist()),  # (whole numbers: exact counts)
        label_name=label_name)


@dataclasses.dataclass
class Totals:
    """The sum of any number of :class:`ExampleSums`; ``Totals()`` is the sum of none."""

    num_images: int = 0
    channel_sum: np.ndarray | None = None  # int64[C]; None until the first example
    channel_sum_squares: np.ndarray | None = None
    value_pixels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(NUM_MASK_VALUES, np.int64))
    value_images: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(NUM_MASK_VALUES, np.int64))
    class_names: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def _with_channels(self, channels: int) -> None:
        if self.channel_sum is None:
            self.channel_sum = np.zeros(channels, np.int64)
            self.channel_sum_squares = np.zeros(channels, np.int64)

    def add(self, sums: ExampleSums) -> "Totals":
        self._with_channels(len(sums.channel_sum))
        self.num_images += 1
        self.channel_sum += sums.channel_sum
        self.channel_sum_squares += sums.channel_sum_squares
        values = list(sums.mask_values)
        self.value_pixels[values] += sums.mask_pixels
        self.value_images[values] += 1
        if sums.label_name:
            self.class_names[sums.label_name] += 1
        return self

    def merge(self, other: "Totals") -> "Totals":
        if other.channel_sum is not None:
            self._with_channels(len(other.channel_sum))
            self.channel_sum += other.channel_sum
            self.channel_sum_squares += other.channel_sum_squares
        self.num_images += other.num_images
        self.value_pixels += other.value_pixels
        self.value_images += other.value_images
        self.class_names.update(other.class_names)
        return self

    def vocabulary(self) -> list[str]:
        """The class names as tf.Transform's ``tft.vocabulary`` orders them: most frequent first,
        ties by the name's UTF-8 bytes, greatest first; names with a line break are left out,
        as tf.Transform leaves them out of a vocabulary file."""
        counted = [(count, name.encode("utf-8")) for name, count in self.class_names.items()
                   if "\n" not in name and "\r" not in name]
        return [name.decode("utf-8") for _, name in sorted(counted, reverse=True)]
