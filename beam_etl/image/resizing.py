"""Resizing to the output size: images with an antialiasing filter, masks with nearest
neighbour only, so that no label value that was not in the mask can ever appear (but for the
padding value of ``--resize pad``); ``--resize`` stretches, pads or crops (:func:`resize_pair`)."""

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


def fitted_size(source_hw: tuple[int, int], size: tuple[int, int], mode: str) -> tuple[int, int]:
    """The size the whole source is resized to before it meets ``size``: ``size`` itself
    (stretch), the largest of the source's aspect inside it (pad), the smallest covering it (crop)."""
    if mode == "stretch":
        return size
    (src_h, src_w), (height, width) = source_hw, size
    scale = (min if mode == "pad" else max)(height / src_h, width / src_w)
    fitted = (max(1, round(src_h * scale)), max(1, round(src_w * scale)))
    if mode == "pad":
        return min(fitted[0], height), min(fitted[1], width)
    return max(fitted[0], height), max(fitted[1], width)


def resize_pair(pixels: np.ndarray, mask: np.ndarray, size: tuple[int, int], mode: str,
                pad_mask_value: int) -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """Image and mask at ``size`` by ``mode`` (--resize); returns them and the region of the
    output the source fills (all of it but for pad).

    Both are resized from their own resolutions (``pixels`` may be a DCT-scaled decode) to the
    same fitted size (:func:`fitted_size`, from the mask's, the source's full size), then padded
    or cropped by the same whole pixels: they stay aligned exactly as a stretched pair does.
    """
    height, width = size
    fitted_h, fitted_w = fitted_size(mask.shape, size, mode)
    image = resize_image(pixels, (fitted_h, fitted_w))
    fitted_mask = resize_mask(mask, (fitted_h, fitted_w))
    if mode == "stretch":
        return image, fitted_mask, (slice(0, height), slice(0, width))
    if mode == "crop":
        top, left = (fitted_h - height) // 2, (fitted_w - width) // 2
        region = (slice(top, top + height), slice(left, left + width))
        return image[region], fitted_mask[region], (slice(0, height), slice(0, width))
    top, left = (height - fitted_h) // 2, (width - fitted_w) // 2
    region = (slice(top, top + fitted_h), slice(left, left + fitted_w))
    padded = np.zeros((height, width, image.shape[2]), np.uint8)
    padded[region] = image
    padded_mask = np.full((height, width), pad_mask_value, np.uint8)
    padded_mask[region] = fitted_mask
    return padded, padded_mask, region
