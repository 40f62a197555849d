"""Checks that a decoded image and mask belong together: pure functions, no Beam."""

from __future__ import annotations

import numpy as np

from beam_etl.image.decoding import DecodedImage
from beam_etl.elements import RejectedInput


def validate_pair(image: DecodedImage, mask: np.ndarray,
                  allowed_values: tuple[int, ...] | None) -> None:
    """Raises RejectedInput when the mask does not fit the image or holds unknown labels."""
    if mask.shape != (image.height, image.width):
        raise RejectedInput(
            "validate", "size_mismatch",
            f"image is {image.width}x{image.height} but mask is {mask.shape[1]}x{mask.shape[0]}")
    if allowed_values is not None:
        present = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
        unexpected = sorted(set(present.tolist()) - set(allowed_values))
        if unexpected:
            raise RejectedInput(
                "validate", "mask_values",
                f"mask holds values {unexpected} outside --mask_values {list(allowed_values)}", of_mask=True)
