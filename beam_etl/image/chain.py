"""The per-example chain: bytes in, serialized records out. Pure functions, no Beam.

``process_example`` is what the Beam DoFn runs for each input and what the benchmark's
hand-written ``multiprocessing.Pool`` runs too, so both measure the same work. Of the settings
it sees only :class:`~beam_etl.config.ChainSettings`, the ones its cached outcomes are named
by: a setting that shapes an example is added there.
"""

from __future__ import annotations

import numpy as np

from beam_etl import schema
from beam_etl.image import augmentation, decoding, encoding, pixel_statistics, resizing, validation
from beam_etl.config import PAD_MASK_VALUE, ChainSettings
from beam_etl.hashing import rng_for
from beam_etl.elements import EncodedExample, RejectedInput, SourceRecord, example_key


# --resize crop scales the whole source to cover the output before it crops: an image whose
# aspect ratio is far from the output's (a 3x2,000,000 strip) would be scaled to billions of
# pixels. Above this many times the larger of the source and the output, it is refused.
MAX_CROP_GROWTH = 4


def decode_size_hint(settings: ChainSettings, split: str = "train") -> tuple[int, int]:
    """The smallest decode size that keeps full quality at the output size.

    Augmented copies (of training examples only) crop down to ``min_crop_scale`` of the image
    and rotate, so they need that much more resolution to be sharp. Other splits decode as if
    there were none: their records do not depend on the augmentation flags.
    """
    height, width = settings.image_size
    if settings.augment_copies and split == "train":
        zoom = 1.0 / augmentation.AugmentSettings().min_crop_scale * 1.2
        return int(height * zoom) + 1, int(width * zoom) + 1
    return height, width


def encode_example(settings: ChainSettings, record: SourceRecord, split: str, copy: int,
                   pixels: np.ndarray, mask: np.ndarray,
                   sums: list | None = None, region: tuple[slice, slice] | None = None) -> EncodedExample:
    """One record; with ``sums`` (a list), its share of the statistics is appended to it,
    counting only ``region`` (the part the source fills: not --resize pad's padding)."""
    key = example_key(record.key, copy)
    encoded = encoding.encode_image(pixels, settings.image_format, settings.jpeg_quality)
    if sums is not None:
        decoded = pixel_statistics.decoded_record_pixels(pixels, encoded, settings.image_format)
        region = region or (slice(None), slice(None))
        sums.append(pixel_statistics.example_sums(decoded[region], mask[region], record.label_name))
    serialized = schema.build_example(
        image=encoded,
        image_format=settings.image_format,
        height=pixels.shape[0],
        width=pixels.shape[1],
        filename=record.image_uri,
        source_id=key,
        mask=encoding.encode_mask(mask, settings.mask_format),
        mask_format=settings.mask_format,
        label=record.label,
        label_name=record.label_name,
    )
    return EncodedExample(example_key=key, split=split, copy=copy,
                          serialized=serialized)


def process_example(record: SourceRecord, image_bytes: bytes, mask_bytes: bytes, split: str,
                    settings: ChainSettings) -> tuple[list[EncodedExample], pixel_statistics.ExampleSums | None]:
    """Decode, validate, resize, augment (training only) and serialize one input; returns its
    records, and its share of the statistics where it counts in them (a training split's
    original, with statistics on), else None.

    Raises :class:`~beam_etl.elements.RejectedInput` for bad data.
    """
    if not isinstance(settings, ChainSettings):  # (a JobConfig: settings no outcome is named by)
        raise TypeError(f"the chain takes ChainSettings (JobConfig.chain_settings(split)), "
                        f"got {type(settings).__name__}")
    image = decoding.decode_image(image_bytes, max_pixels=settings.max_pixels,
                                  min_size=decode_size_hint(settings, split))
    mask = decoding.decode_mask(mask_bytes, max_pixels=settings.max_pixels)
    validation.validate_pair(image, mask, settings.mask_values)
    if split == "train" and settings.augment_copies and not augmentation.can_augment(mask.shape):
        raise RejectedInput("augment", "too_small_to_augment",
                            f"{mask.shape[1]}x{mask.shape[0]} pixels leave no room for the crops of "
                            f"--augment_copies={settings.augment_copies}")
    if settings.resize == "pad" and (mask == PAD_MASK_VALUE).any():
        raise RejectedInput("validate", "reserved_mask_value",
                            f"mask holds {PAD_MASK_VALUE}, the value --resize pad gives the padding "
                            "(an ignored value, no class)", of_mask=True)
    if settings.resize == "crop":
        fitted_h, fitted_w = resizing.fitted_size(mask.shape, settings.image_size, "crop")
        bound = MAX_CROP_GROWTH * max(mask.size, settings.image_size[0] * settings.image_size[1])
        if fitted_h * fitted_w > bound:
            raise RejectedInput("validate", "extreme_aspect",
                                f"{mask.shape[1]}x{mask.shape[0]} pixels would be scaled to {fitted_w}x{fitted_h} "
                                f"to cover {settings.image_size[1]}x{settings.image_size[0]} (--resize crop)")
    sums = [] if settings.statistics and split == "train" else None
    pixels, resized_mask, region = resizing.resize_pair(image.pixels, mask, settings.image_size, settings.resize,
                                                         PAD_MASK_VALUE)
    examples = [encode_example(settings, record, split, 0, pixels, resized_mask, sums, region)]
    if split == "train":
        for copy in range(1, settings.augment_copies + 1):
            pixels, copy_mask = augmentation.augment(
                image.pixels, mask, settings.image_size, rng_for(settings.seed, record.key, copy),
                keep_aspect=settings.resize != "stretch")
            examples.append(encode_example(settings, record, split, copy, pixels, copy_mask))
    return examples, (sums[0] if sums else None)
