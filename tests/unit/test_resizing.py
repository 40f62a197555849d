import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from beam_etl.hashing import rng_for
from beam_etl.image.augmentation import AugmentSettings, augment
from beam_etl.image.resizing import fitted_size, resize_image, resize_mask, resize_pair
from tests.support.images import gradient

sizes = st.integers(min_value=1, max_value=70)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), height=sizes, width=sizes, out_h=sizes, out_w=sizes)
def test_resized_mask_never_holds_a_new_value(data, height, width, out_h, out_w):
    labels = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=5, unique=True))
    mask = data.draw(arrays(np.uint8, (height, width), elements=st.sampled_from(labels)))
    resized = resize_mask(mask, (out_h, out_w))
    assert resized.shape == (out_h, out_w)
    assert set(np.unique(resized).tolist()) <= set(np.unique(mask).tolist())


def test_mask_nearest_neighbour_is_exact_on_integer_factors():
    mask = np.arange(16, dtype=np.uint8).reshape(4, 4)
    np.testing.assert_array_equal(resize_mask(mask, (8, 8)), np.repeat(np.repeat(mask, 2, 0), 2, 1))
    np.testing.assert_array_equal(resize_mask(np.repeat(np.repeat(mask, 3, 0), 3, 1), (4, 4)), mask)


def test_image_resize_filters_rather_than_samples():
    # A one-pixel checkerboard averages to grey under a proper filter; sampling would keep 0/255.
    board = ((np.indices((64, 64)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = resize_image(np.repeat(board[:, :, None], 3, axis=2), (16, 16))
    assert out.shape == (16, 16, 3)
    assert np.all(np.abs(out.astype(int) - 128) < 10)


def test_image_resize_to_hxw_and_identity():
    pixels = gradient(60, 80)
    assert resize_image(pixels, (30, 50)).shape == (30, 50, 3)
    assert resize_image(pixels, (60, 80)) is pixels


# --resize: stretch, pad, crop --------------------------------------------------------------------



def _coded(height, width):
    """A mask of blocks (values 1-3) and an image whose red channel says the mask value (x80)."""
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.asarray([1, 2, 3], np.uint8)[((yy // 9) + (xx // 13)) % 3]
    return np.repeat((mask * 80)[:, :, None], 3, axis=2).astype(np.uint8), mask


def _agree(image, mask, region):
    """Share of interior pixels of ``region`` whose image colour says their mask value."""
    mask, image = mask[region], image[region]
    interior = np.ones_like(mask, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= np.roll(mask, (dy, dx), axis=(0, 1)) == mask
    interior[[0, -1], :] = interior[:, [0, -1]] = False
    assert interior.sum() > 200
    return np.mean(np.rint(image[:, :, 0] / 80.0)[interior] == mask[interior])


@pytest.mark.parametrize("source, mode, expected", [
    ((375, 500), "stretch", (128, 128)), ((375, 500), "pad", (96, 128)), ((375, 500), "crop", (128, 171)),
    ((500, 375), "pad", (128, 96)), ((500, 375), "crop", (171, 128)), ((64, 64), "pad", (128, 128)),
    ((300, 100), "pad", (128, 43)), ((300, 100), "crop", (384, 128))])
def test_fitted_size_keeps_the_aspect_ratio(source, mode, expected):
    assert fitted_size(source, (128, 128), mode) == expected


@pytest.mark.parametrize("mode", ["stretch", "pad", "crop"])
@pytest.mark.parametrize("source", [(150, 200), (200, 150), (120, 120)])
def test_every_mode_keeps_image_and_mask_aligned(mode, source):
    pixels, mask = _coded(*source)
    half = resize_image(pixels, (source[0] // 2, source[1] // 2))  # a DCT-scaled decode maps the same
    for image in (pixels, half):
        out, out_mask, region = resize_pair(image, mask, (64, 96), mode, 255)
        assert out.shape == (64, 96, 3) and out_mask.shape == (64, 96)
        assert _agree(out, out_mask, region) > 0.99
        assert set(np.unique(out_mask[region]).tolist()) <= {1, 2, 3}


def test_pad_keeps_the_whole_image_centred_and_marks_the_rest():
    pixels, mask = _coded(150, 200)  # 4:3 into 64x96 (2:3): fitted 64x85, 5 + 6 columns of padding
    out, out_mask, region = resize_pair(pixels, mask, (64, 96), "pad", 255)
    assert region == (slice(0, 64), slice(5, 90))
    assert (out_mask[:, :5] == 255).all() and (out_mask[:, 90:] == 255).all() and (out[:, :5] == 0).all()
    assert not (out_mask[region] == 255).any()
    np.testing.assert_array_equal(out_mask[region], resize_mask(mask, (64, 85)))


def test_crop_keeps_the_centre_at_the_aspect_ratio():
    pixels, mask = _coded(150, 200)  # 4:3 into 64x64: fitted 64x85, 10 columns off the left
    out, out_mask, region = resize_pair(pixels, mask, (64, 64), "crop", 255)
    assert region == (slice(0, 64), slice(0, 64))
    np.testing.assert_array_equal(out_mask, resize_mask(mask, (64, 85))[:, 10:74])


@pytest.mark.parametrize("seed", range(5))
def test_augmented_copies_of_pad_and_crop_are_not_stretched(seed):
    """With keep_aspect, a copy's crop has the output's aspect: a square block of the source
    stays square in a 32x64 copy (stretching would halve its width-to-height ratio)."""
    mask = np.ones((200, 200), np.uint8)
    mask[80:120, 80:120] = 2
    none = AugmentSettings(max_brightness=0.0, max_contrast=0.0, max_rotation_deg=0.0)
    pixels = np.repeat((mask * 80)[:, :, None], 3, axis=2)
    _, out_mask = augment(pixels, mask, (32, 64), rng_for(seed, "k", 1), none, keep_aspect=True)
    rows, cols = np.nonzero(out_mask == 2)
    assert rows.size > 0  # the block is at the centre: every crop holds it
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert abs(width - height) <= 2
    _, stretched = augment(pixels, mask, (32, 64), rng_for(seed, "k", 1), none)
    rows, cols = np.nonzero(stretched == 2)
    assert cols.max() - cols.min() + 1 > 1.5 * (rows.max() - rows.min() + 1)  # what keep_aspect avoids
