import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from beam_etl.image.resizing import resize_image, resize_mask
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
