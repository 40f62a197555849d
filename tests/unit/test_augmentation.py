import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import cv2

from beam_etl.image.augmentation import AugmentParams, AugmentSettings, _warp, affine_coefficients, augment
from beam_etl.hashing import rng_for
from beam_etl.image.resizing import resize_image, resize_mask
from tests.support.images import gradient


def _blocks(height, width, values=(1, 2, 3)):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.asarray(values, np.uint8)[((yy // 7) + (xx // 11)) % len(values)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), height=st.integers(8, 90), width=st.integers(8, 90),
       values=st.lists(st.integers(0, 255), min_size=1, max_size=4, unique=True))
def test_augmented_mask_values_come_from_the_input(seed, height, width, values):
    mask = _blocks(height, width, values)
    pixels = np.repeat(mask[:, :, None], 3, axis=2)
    _, out = augment(pixels, mask, (32, 24), rng_for(seed, "key", 1))
    assert out.shape == (32, 24)
    assert set(np.unique(out).tolist()) <= set(values)  # no 0 or 255 fill from rotated corners


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_image_and_mask_move_together(seed):
    # The image encodes the mask (label * 80); after augmentation the image, read back as a
    # label, must agree with the augmented mask wherever the mask is not at a label boundary.
    mask = _blocks(120, 160)
    pixels = np.repeat((mask * 80)[:, :, None], 3, axis=2)
    none = AugmentSettings(max_brightness=0.0, max_contrast=0.0)
    image, out_mask = augment(pixels, mask, (64, 64), rng_for(seed, "k", 1), none)
    from_image = np.rint(image[:, :, 0] / 80.0).astype(int)
    interior = np.ones_like(out_mask, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(out_mask, (dy, dx), axis=(0, 1)) == out_mask
    interior[[0, -1], :] = interior[:, [0, -1]] = False
    assert interior.sum() > 500
    assert np.mean(from_image[interior] == out_mask[interior]) > 0.99


def test_image_decoded_smaller_maps_onto_the_same_region():
    mask = _blocks(200, 240)
    full = gradient(200, 240)  # smooth, so a half-resolution copy differs only by misalignment
    half = resize_image(full, (100, 120))
    none = AugmentSettings(max_brightness=0.0, max_contrast=0.0)
    image_full, mask_full = augment(full, mask, (48, 48), rng_for(0, "k", 3), none)
    image_half, mask_half = augment(half, mask, (48, 48), rng_for(0, "k", 3), none)
    np.testing.assert_array_equal(mask_full, mask_half)
    assert np.mean(np.abs(image_full.astype(int) - image_half.astype(int))) < 3


def test_reproducible_from_seed_key_and_copy():
    mask = _blocks(50, 70)
    pixels = np.repeat((mask * 60)[:, :, None], 3, axis=2)
    first = augment(pixels, mask, (32, 32), rng_for(7, "k", 1))
    again = augment(pixels, mask, (32, 32), rng_for(7, "k", 1))
    other = augment(pixels, mask, (32, 32), rng_for(7, "k", 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_flip_without_rotation_or_crop_mirrors_exactly():
    mask = _blocks(32, 32)
    params = AugmentParams(flip=True, angle_deg=0.0, crop_scale=1.0, center_x=0.0, center_y=0.0,
                           brightness=0.0, contrast=1.0)
    # With a zero margin the full-image flip is exact pixel for pixel.
    coeffs = affine_coefficients((32, 32), (32, 32), params, margin=0.0)
    from PIL import Image
    flipped = np.asarray(Image.fromarray(mask).transform((32, 32), Image.Transform.AFFINE, coeffs,
                                                          resample=Image.Resampling.NEAREST))
    np.testing.assert_array_equal(flipped, mask[:, ::-1])
    # The OpenCV warp the job uses reads the same coefficients the same way.
    np.testing.assert_array_equal(_warp(mask, coeffs, (32, 32), cv2.INTER_NEAREST), mask[:, ::-1])
    image = np.repeat(mask[:, :, None] * 50, 3, axis=2)
    np.testing.assert_array_equal(_warp(image, coeffs, (32, 32), cv2.INTER_LINEAR), image[:, ::-1])
    assert resize_mask(mask, (32, 32)) is mask


def test_photometric_changes_touch_the_image_only():
    mask = _blocks(40, 40)
    pixels = np.full((40, 40, 3), 100, np.uint8)
    geometry_only = AugmentSettings(max_brightness=0.0, max_contrast=0.0)
    bright = AugmentSettings(max_brightness=0.3, max_contrast=0.0)
    _, mask_a = augment(pixels, mask, (20, 20), rng_for(1, "k", 1), geometry_only)
    image_b, mask_b = augment(pixels, mask, (20, 20), rng_for(1, "k", 1), bright)
    np.testing.assert_array_equal(mask_a, mask_b)
    assert len(np.unique(image_b)) == 1 and image_b[0, 0, 0] != 100
