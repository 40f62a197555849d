"""Each example's share of the statistics, and their sum: exact, and in any grouping."""

import collections

import numpy as np
import pytest

from beam_etl.image import encoding, pixel_statistics
from beam_etl.image.pixel_statistics import Totals, example_sums
from tests.support.images import gradient


def _example(seed, height=20, width=12):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = rng.choice(np.array([1, 2, 3, 255], np.uint8), size=(height, width))
    return pixels, mask


@pytest.mark.parametrize("histogram_limit", [pixel_statistics.FLOAT32_EXACT, 10])  # OpenCV, numpy
def test_a_share_is_the_exact_sums_of_its_pixels_and_mask(monkeypatch, histogram_limit):
    monkeypatch.setattr(pixel_statistics, "FLOAT32_EXACT", histogram_limit)
    pixels, mask = _example(0)
    pixels[0, 0] = 255
    sums = example_sums(pixels, mask, "pug")
    wide = pixels.reshape(-1, 3).astype(np.int64)
    assert sums.channel_sum == tuple(wide.sum(axis=0).tolist())
    assert sums.channel_sum_squares == tuple((wide * wide).sum(axis=0).tolist())
    values, counts = np.unique(mask, return_counts=True)
    assert sums.mask_values == tuple(values.tolist()) and sums.mask_pixels == tuple(counts.tolist())
    assert sums.label_name == "pug"


def test_a_large_bright_share_is_exact():
    """Sums far past what 32-bit accumulators hold (3,000 x 3,000 white pixels: 5.9e11 per
    channel squared) are still exact."""
    pixels = np.full((3000, 3000, 3), 255, np.uint8)
    pixels[0, 0] = (0, 1, 2)
    sums = example_sums(pixels, np.zeros((3000, 3000), np.uint8), "")
    white = 3000 * 3000 - 1
    assert sums.channel_sum == (255 * white, 255 * white + 1, 255 * white + 2)
    assert sums.channel_sum_squares == (65025 * white, 65025 * white + 1, 65025 * white + 4)


def test_totals_are_the_same_in_any_grouping():
    shares = [example_sums(*_example(seed), name) for seed, name in enumerate(["a", "b", "a", "", "c", "a"])]
    one_by_one = Totals()
    for share in shares:
        one_by_one.add(share)
    left, right = Totals(), Totals()
    for share in shares[:2]:
        left.add(share)
    for share in shares[2:]:
        right.add(share)
    merged = Totals().merge(right).merge(Totals()).merge(left)
    for totals in (one_by_one, merged):
        assert totals.num_images == 6
        pixels = np.concatenate([_example(seed)[0].reshape(-1, 3) for seed in range(6)]).astype(np.int64)
        masks = np.concatenate([_example(seed)[1].ravel() for seed in range(6)])
        np.testing.assert_array_equal(totals.channel_sum, pixels.sum(axis=0))
        np.testing.assert_array_equal(totals.channel_sum_squares, (pixels * pixels).sum(axis=0))
        np.testing.assert_array_equal(totals.value_pixels, np.bincount(masks, minlength=256))
        np.testing.assert_array_equal(totals.value_images[[1, 2, 3, 255]], [6, 6, 6, 6])
        assert totals.class_names == collections.Counter({"a": 3, "b": 1, "c": 1})
    assert Totals().num_images == 0 and Totals().channel_sum is None


def test_the_vocabulary_is_ordered_as_tf_transform_orders_it():
    totals = Totals(class_names=collections.Counter({"beagle": 2, "Abyssinian": 2, "pug": 3, "two\nlines": 9,
                                                     "é": 2, "cr\r": 1}))
    # most frequent first; ties by UTF-8 bytes, greatest first; line breaks left out
    assert totals.vocabulary() == ["pug", "é", "beagle", "Abyssinian"]


@pytest.mark.parametrize("quality", [75, 95])
def test_jpeg_records_are_summed_as_tensorflow_decodes_them(quality):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    for seed, pixels in enumerate([gradient(37, 53), _example(1, 64, 48)[0], gradient(128, 128)]):
        encoded = encoding.encode_image(pixels, "jpeg", quality)
        ours = pixel_statistics.decoded_record_pixels(pixels, encoded, "jpeg")
        theirs = tf.io.decode_jpeg(encoded, channels=3).numpy()
        assert not np.array_equal(ours, pixels), seed  # lossy: the record is not the pixels
        np.testing.assert_array_equal(ours, theirs, err_msg=str(seed))
    lossless = gradient(8, 8)
    assert pixel_statistics.decoded_record_pixels(lossless, b"unused", "png") is lossless
