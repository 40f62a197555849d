"""Resizing to the output size: images with an antialiasing filter, masks with nearest
neighbour only, so that no label value that was not in the mask can ever appear."""

from __future__ import annotations

import cv2
import numpy as np

# Parallelism comes from the runner's workers; OpenCV's own thread pool would only compete.
cv2.setNumThreads(1)

# Below this shrink factor, bilinear interpolation reads every source pixel and does not
# alias; above it, area averaging does. The JPEG decoder's DCT scaling already brings most
# images below it, where bilinear is several times faster than area (BENCHMARKS.md).
_AREA_ABOVE = 2.0


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8[h, w, 3]`` -> ``uint8[size[0], size[1], 3]``."""
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    shrink = max(pixels.shape[0] / height, pixels.shape[1] / width)
    interpolation = cv2.INTER_AREA if shrink > _AREA_ABOVE else cv2.INTER_LINEAR
    return cv2.resize(pixels, (width, height), interpolation=interpolation)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8[h, w]`` -> ``uint8[size]`` by nearest neighbour: every output value is an input value.

    INTER_NEAREST_EXACT samples at pixel centres, as Pillow's NEAREST does (OpenCV's plain
    INTER_NEAREST is shifted by half a pixel).
    """
    height, width = size
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
