import numpy as np
import pytest

from beam_etl.image.decoding import DecodedImage
from beam_etl.elements import RejectedInput
from beam_etl.image.validation import validate_pair


def _image(height, width):
    return DecodedImage(np.zeros((height // 2, width // 2, 3), np.uint8), height, width)


def test_sizes_compare_at_full_resolution():
    validate_pair(_image(40, 60), np.ones((40, 60), np.uint8), None)
    with pytest.raises(RejectedInput) as error:
        validate_pair(_image(40, 60), np.ones((60, 40), np.uint8), None)
    assert error.value.reason == "size_mismatch" and "60x40" in error.value.message


def test_mask_values_outside_the_allowed_set():
    mask = np.array([[1, 2], [3, 7]], np.uint8)
    validate_pair(_image(2, 2), mask, (1, 2, 3, 7))
    with pytest.raises(RejectedInput) as error:
        validate_pair(_image(2, 2), mask, (1, 2, 3))
    assert error.value.reason == "mask_values" and "[7]" in error.value.message
    assert error.value.of_mask  # (the rejection names the mask's file)


def test_a_rejection_names_the_mask_in_the_mask_s_own_stages_or_where_its_raiser_says_so():
    assert RejectedInput("decode_mask", "truncated", "m").of_mask and RejectedInput("read_mask", "unreadable", "m").of_mask
    assert not RejectedInput("decode_image", "truncated", "m").of_mask
    assert not RejectedInput("validate", "size_mismatch", "m").of_mask
