"""Offline augmentation: the same random geometry on image and mask, photometric changes on
the image only. Pure functions, no Beam.

The geometry (flip, rotation, crop) is one affine map sampled once per copy from an explicit
``numpy`` generator and applied in a single resampling step (OpenCV), bilinear for the image
and nearest neighbour for the mask. The rotated crop is always chosen inside the source image, so
no fill value (0 or 255) ever enters a rotated corner: every mask value in the output was in
the input.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

# Distance kept from the border, in full-resolution pixels, so that no filter tap falls
# outside even on an image decoded at 1/8 scale; it does not depend on the decoded size, so
# the mask's geometry is the same whatever the JPEG decoder did.
_MIN_MARGIN = 1.0
_MAX_MARGIN = 8.0


def _margin(full_hw: tuple[int, int]) -> float:
    return max(_MIN_MARGIN, min(_MAX_MARGIN, min(full_hw) / 8.0))


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    max_rotation_deg: float = 10.0
    min_crop_scale: float = 0.7  # side of the crop relative to the largest that fits
    max_brightness: float = 0.15  # additive, as a fraction of 255
    max_contrast: float = 0.2  # multiplicative, 1 +/- this


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    flip: bool
    angle_deg: float
    crop_scale: float
    center_x: float  # in [-1, 1]: where the crop sits within the room it has
    center_y: float
    brightness: float
    contrast: float


def sample_params(rng: np.random.Generator, settings: AugmentSettings = AugmentSettings()) -> AugmentParams:
    """Draws one copy's parameters; the draw order is part of the reproducibility contract."""
    return AugmentParams(
        flip=bool(rng.random() < 0.5),
        angle_deg=float(rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg)),
        crop_scale=float(rng.uniform(settings.min_crop_scale, 1.0)),
        center_x=float(rng.uniform(-1.0, 1.0)),
        center_y=float(rng.uniform(-1.0, 1.0)),
        brightness=float(rng.uniform(-settings.max_brightness, settings.max_brightness)),
        contrast=float(rng.uniform(1.0 - settings.max_contrast, 1.0 + settings.max_contrast)),
    )


def can_augment(source_hw: tuple[int, int]) -> bool:
    """Whether an image of ``source_hw`` leaves room for a crop inside its border margin."""
    margin = _margin(source_hw)
    return min(source_hw) - 2 * margin > 0


def affine_coefficients(source_hw: tuple[int, int], output_hw: tuple[int, int],
                        params: AugmentParams, margin: float = _MIN_MARGIN,
                        keep_aspect: bool = False) -> tuple[float, ...]:
    """``(a, b, c, d, e, f)`` mapping output to source coordinates, as Pillow's AFFINE data:
    ``x_src = a x + b y + c``, ``y_src = d x + e y + f``, with pixel centres at ``i + 0.5``.

    The crop keeps the source's aspect ratio (as the plain resize does; with ``keep_aspect``,
    the output's, so that nothing is stretched, as --resize pad and crop promise), is rotated by
    ``angle_deg`` about its centre and is scaled so that its rotated corners stay inside the
    source, ``margin`` pixels from the border.
    """
    src_h, src_w = source_hw
    out_h, out_w = output_hw
    theta = math.radians(params.angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    room_w, room_h = src_w - 2 * margin, src_h - 2 * margin
    if room_w <= 0 or room_h <= 0:
        raise ValueError(f"image of {src_w}x{src_h} pixels is too small to augment")
    # Largest crop of the source's (or the output's) aspect whose rotated bounding box fits the room.
    aspect_w, aspect_h = (out_w, out_h) if keep_aspect else (src_w, src_h)
    fit = min(room_w / (abs(cos) * aspect_w + abs(sin) * aspect_h),
              room_h / (abs(sin) * aspect_w + abs(cos) * aspect_h))
    crop_w = aspect_w * fit * params.crop_scale
    crop_h = aspect_h * fit * params.crop_scale
    half_box_w = (abs(cos) * crop_w + abs(sin) * crop_h) / 2
    half_box_h = (abs(sin) * crop_w + abs(cos) * crop_h) / 2
    center_x = src_w / 2 + params.center_x * max(0.0, room_w / 2 - half_box_w)
    center_y = src_h / 2 + params.center_y * max(0.0, room_h / 2 - half_box_h)
    sign = -1.0 if params.flip else 1.0
    # source = centre + R(theta) @ (sign * crop_w * (u / out_w - 1/2), crop_h * (v / out_h - 1/2))
    a, b = cos * crop_w * sign / out_w, -sin * crop_h / out_h
    d, e = sin * crop_w * sign / out_w, cos * crop_h / out_h
    c = center_x - (a * out_w + b * out_h) / 2
    f = center_y - (d * out_w + e * out_h) / 2
    return (a, b, c, d, e, f)


def adjust_photometric(pixels: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Contrast about the image mean, then brightness; the image only, never the mask."""
    values = pixels.astype(np.float32)
    mean = values.mean()
    values = (values - mean) * params.contrast + mean + params.brightness * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def augment(pixels: np.ndarray, mask: np.ndarray, output_hw: tuple[int, int],
            rng: np.random.Generator, settings: AugmentSettings = AugmentSettings(),
            keep_aspect: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy at ``output_hw`` from a full-resolution image and mask (its crop of
    the output's aspect with ``keep_aspect``, see :func:`affine_coefficients`).

    ``pixels`` may be a DCT-downscaled decode of the image the mask belongs to: the map is
    computed at the mask's (full) resolution and scaled onto the image, so both see exactly
    the same region.
    """
    params = sample_params(rng, settings)
    out_h, out_w = output_hw
    scale_y, scale_x = pixels.shape[0] / mask.shape[0], pixels.shape[1] / mask.shape[1]
    mask_coeffs = affine_coefficients(mask.shape, output_hw, params, _margin(mask.shape), keep_aspect)
    a, b, c, d, e, f = mask_coeffs
    image_coeffs = (a * scale_x, b * scale_x, c * scale_x, d * scale_y, e * scale_y, f * scale_y)
    image = _warp(pixels, image_coeffs, (out_h, out_w), cv2.INTER_LINEAR)
    out_mask = _warp(mask, mask_coeffs, (out_h, out_w), cv2.INTER_NEAREST)
    return adjust_photometric(image, params), out_mask


def _warp(source: np.ndarray, coeffs: tuple[float, ...], output_hw: tuple[int, int],
          interpolation: int) -> np.ndarray:
    """Applies output->source affine ``coeffs`` given in pixel-centre coordinates (x + 0.5).

    OpenCV indexes pixel centres at integers, hence the half-pixel shift. Reflection at the
    border is a second guard: even a tap past the edge reads a value that is in the input.
    """
    a, b, c, d, e, f = coeffs
    matrix = np.array([[a, b, c + (a + b) / 2 - 0.5], [d, e, f + (d + e) / 2 - 0.5]], np.float64)
    out_h, out_w = output_hw
    return cv2.warpAffine(source, matrix, (out_w, out_h), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)
