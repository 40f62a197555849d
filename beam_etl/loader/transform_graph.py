"""The transform graph that training and serving share: tf.Transform's ``preprocessing_fn`` of
the job's records, and reading the written graph back. TensorFlow only, no Beam: the loader and
a trainer import this; the job's analysis step (:mod:`beam_etl.beam.statistics`) runs it.

:func:`make_preprocessing_fn`'s analyzers compute

- per-channel pixel sums and sums of squares (exact int64), hence mean and standard deviation;
- a 256-bin histogram of mask values over pixels, and over images (in how many images each value
  appears), hence class pixel frequencies and the fraction of images that contain each class;
- a vocabulary of class names (``image/class/text``, Oxford breeds), written as the TFT
  vocabulary file :data:`CLASS_NAMES`;

and its outputs are what a model consumes: ``image`` float32 normalized with the mean and
standard deviation, ``mask`` class ids 0..K-1 (the K mask values in increasing order: trimap
1, 2, 3 become 0, 1, 2; a value outside them becomes -1), ``label`` the id of the class name in
the vocabulary (-1 where unknown). TFT only emits float32, int64 and string features, so the
mask is int64 here and the loader casts it to int32.

``tft.TFTransformOutput(OUTPUT)`` then works on the job's output. The statistics are also
outputs of the graph (``statistics/...``, the same for every example): that is how they are read
back out of TFT into ``manifest.json`` (:func:`read_statistics`), and it lets a model that is
handed the transform layer reach them (class weights, for one) without the manifest.
"""

from __future__ import annotations

import numpy as np

from beam_etl import schema
from beam_etl.image import encoding
from beam_etl.output_layout import TRANSFORM_DIRS

CLASS_NAMES = "class_names"  # TFT vocabulary file name
IMAGE, MASK, LABEL = "image", "mask", "label"
STATISTICS_PREFIX = "statistics/"
NUM_MASK_VALUES = 256  # masks are uint8
# The record features the transform reads. Its input signature is every raw feature (what a TFX
# trainer parsing with metadata/schema.pbtxt passes); the loader parses and passes only these.
RAW_FEATURES = (schema.IMAGE_ENCODED, schema.MASK_ENCODED, schema.CLASS_TEXT)


def make_preprocessing_fn(image_info: dict, mask_values: tuple[int, ...] | None):
    """The TFT ``preprocessing_fn`` for records of ``image_info`` (the manifest's ``image``).

    ``mask_values``: the label set (``--mask_values``); without it, the values seen in the
    training split.
    """

    def preprocessing_fn(inputs):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel

        from beam_etl.loader import tf_decoding  # pylint: disable=import-outside-toplevel

        height, width = image_info["height"], image_info["width"]
        images = tf_decoding.decode_images(inputs[schema.IMAGE_ENCODED], image_info)  # uint8[B,H,W,3]
        masks = tf_decoding.decode_masks(inputs[schema.MASK_ENCODED], image_info)  # uint8[B,H,W]
        batch = tf.shape(images)[0]
        pixels = tf.cast(images, tf.int64)
        channel_sum = tft.sum(tf.reduce_sum(pixels, axis=[1, 2]), reduce_instance_dims=False)
        channel_sum_squares = tft.sum(tf.reduce_sum(pixels * pixels, axis=[1, 2]),
                                      reduce_instance_dims=False)
        num_images = tft.sum(tf.ones([batch], tf.int64))
        per_image = tf.math.bincount(  # int64[B, 256]: pixels of each mask value in each image
            tf.reshape(tf.cast(masks, tf.int32), [batch, -1]), minlength=NUM_MASK_VALUES,
            maxlength=NUM_MASK_VALUES, axis=-1, dtype=tf.int64)
        # Analyzer outputs come without a static shape; the graph's outputs need one.
        value_pixels = tf.reshape(tft.sum(per_image, reduce_instance_dims=False), [NUM_MASK_VALUES])
        value_images = tf.reshape(tft.sum(tf.cast(per_image > 0, tf.int64), reduce_instance_dims=False),
                                  [NUM_MASK_VALUES])

        names = inputs[schema.CLASS_TEXT]
        vocabulary = tft.vocabulary(tf.boolean_mask(names, tf.strings.length(names) > 0),
                                    vocab_filename=CLASS_NAMES)

        num_pixels = tf.cast(num_images * height * width, tf.float64)
        mean = tf.cast(channel_sum, tf.float64) / tf.maximum(num_pixels, 1.0)
        variance = tf.cast(channel_sum_squares, tf.float64) / tf.maximum(num_pixels, 1.0) - mean * mean
        std = tf.sqrt(tf.maximum(variance, 0.0))
        std = tf.where(std > 0, std, tf.ones_like(std))  # a constant channel: leave its scale alone
        if mask_values is None:
            is_class = value_pixels > 0
        else:
            is_class = tf.constant([value in mask_values for value in range(NUM_MASK_VALUES)])
        class_ids = tf.where(is_class, tf.cumsum(tf.cast(is_class, tf.int64)) - 1,
                             tf.constant(-1, tf.int64))  # int64[256]: mask value -> class id

        def per_pixel(value):  # [C] -> [H, W, C]
            return tf.reshape(tf.tile(value, [height * width]), [height, width, -1])

        # x * (1/std) + (-mean/std), with the factors tiled to a whole image: broadcasting a
        # [3] vector over [B, H, W, 3] is several times slower in TensorFlow's kernels, and this
        # runs on every batch the loader reads. The [C] factors are outputs too: the loader's
        # on-device normalization (loader.normalization_layer) applies exactly these.
        pixel_scale, pixel_offset = tf.cast(1.0 / std, tf.float32), tf.cast(-mean / std, tf.float32)
        scale, offset = per_pixel(pixel_scale), per_pixel(pixel_offset)

        def per_example(value, shape):
            value = tf.reshape(value, shape)
            return tf.ensure_shape(tf.broadcast_to(value, tf.concat([[batch], tf.constant(shape, tf.int32)], 0)), [None, *shape])

        outputs = {
            IMAGE: tf.cast(images, tf.float32) * scale + offset,
            MASK: class_ids_of(masks, class_ids, tf.int64),
            LABEL: tft.apply_vocabulary(names, vocabulary, default_value=-1),
        }
        channels, values = [image_info["channels"]], [NUM_MASK_VALUES]
        statistics = {"num_images": (num_images, []), "channel_sum": (channel_sum, channels),
                      "channel_sum_squares": (channel_sum_squares, channels),
                      "value_pixels": (value_pixels, values), "value_images": (value_images, values),
                      "class_ids": (class_ids, values), "pixel_scale": (pixel_scale, channels),
                      "pixel_offset": (pixel_offset, channels)}
        outputs.update({STATISTICS_PREFIX + name: per_example(value, shape)
                        for name, (value, shape) in statistics.items()})
        return outputs

    return preprocessing_fn


def _subtract_from_each_byte(values, low):
    """``uint8`` ``values - low`` where no value is below ``low``: four bytes per uint32
    subtraction of ``low * 0x01010101`` (exact: without a borrow, each byte is its own
    difference, whatever the byte order). One uint8 subtraction where no dimension is known to
    be a multiple of four."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    dims = values.shape.as_list() if values.shape.rank is not None else []
    if not any(dim is not None and dim % 4 == 0 for dim in dims):
        return values - low
    words = tf.bitcast(tf.reshape(values, [-1, 4]), tf.uint32)
    return tf.reshape(tf.bitcast(words - tf.cast(low, tf.uint32) * 0x01010101, tf.uint8), tf.shape(values))


def class_ids_of(masks, class_ids, dtype, only_classes: bool = False):
    """uint8 mask values -> class ids as ``dtype`` (-1: not a class); ``class_ids`` is the
    graph's ``int64[256]`` table (mask value -> id, -1 where the value is not a class).

    The usual label sets are contiguous (trimaps 1-3, or 0..K-1): then the id is one uint8
    subtraction and one comparison (a value below the range wraps around above it), or the
    subtraction alone where the caller knows that ``masks`` hold only class values
    (``only_classes``, see :func:`masks_hold_only_classes`). A table look-up (``tf.gather``)
    is the general case, several times slower per pixel. ``tf.int8`` (for at most 128
    classes) stays in 8 bits throughout: -1 is 0xFF reinterpreted.

    With ``only_classes`` the subtraction runs on four pixels at once, as uint32: since no
    pixel is below the range, no byte borrows from the next (``_subtract_from_each_byte``).
    On a 128x128 mask, one thread: 6-7 microseconds as uint8, under 1 as uint32 (BENCHMARKS.md).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    is_class = class_ids >= 0
    count = tf.reduce_sum(tf.cast(is_class, tf.int32))
    low = tf.cast(tf.argmax(tf.cast(is_class, tf.int32)), tf.int32)
    high = NUM_MASK_VALUES - 1 - tf.cast(tf.argmax(tf.cast(is_class[::-1], tf.int32)), tf.int32)

    def by_range():
        if only_classes:  # every offset is an id (0..K-1); no value to turn into -1
            offset = _subtract_from_each_byte(masks, tf.cast(low, tf.uint8))
            return tf.bitcast(offset, tf.int8) if dtype == tf.int8 else tf.cast(offset, dtype)
        offset = masks - tf.cast(low, tf.uint8)
        inside = offset <= tf.cast(high - low, tf.uint8)
        if dtype == tf.int8:
            return tf.bitcast(tf.where(inside, offset, tf.constant(0xFF, tf.uint8)), tf.int8)
        return tf.where(inside, tf.cast(offset, dtype), tf.constant(-1, dtype))

    def by_table():
        return tf.gather(tf.cast(class_ids, dtype), tf.cast(masks, tf.int32))

    return tf.cond((count > 0) & (high - low + 1 == count), by_range, by_table)


def masks_hold_only_classes(manifest: dict, split: str) -> bool:
    """Whether every mask value in ``split`` of a job's output is a class (has an id), as the
    job guarantees it: with ``--mask_values`` validation rejects any other value, and without
    it the label set is every value the statistics' split holds (resizing is nearest
    neighbour and augmentation brings in no fill value, so copies hold no new ones).
    """
    stats = manifest.get("statistics")
    if stats is None:
        return False
    return manifest["flags"].get("mask_values") is not None or split == stats["split"]


def summarize(raw: dict[str, np.ndarray], image_info: dict, class_names: list[str]) -> dict:
    """The manifest's ``statistics``, from the graph's ``statistics/...`` outputs (one example's)."""
    num_images = int(raw["num_images"])
    num_pixels = num_images * image_info["height"] * image_info["width"]
    denominator = max(num_pixels, 1)
    mean = raw["channel_sum"].astype(np.float64) / denominator
    variance = raw["channel_sum_squares"].astype(np.float64) / denominator - mean * mean
    class_values = [int(v) for v in np.flatnonzero(raw["class_ids"] >= 0)]
    value_pixels = raw["value_pixels"].astype(np.float64)
    value_images = raw["value_images"].astype(np.float64)
    return {
        "split": "train",
        "num_images": num_images,
        "num_pixels": num_pixels,
        "pixel_mean": mean.tolist(),
        "pixel_std": np.sqrt(np.maximum(variance, 0.0)).tolist(),
        "class_values": class_values,
        "class_pixel_frequency": [value_pixels[v] / denominator for v in class_values],
        "class_image_fraction": [value_images[v] / max(num_images, 1) for v in class_values],
        "other_value_pixels": int(raw["value_pixels"][raw["class_ids"] < 0].sum()),
        "class_names": class_names,
        "transform_output": list(TRANSFORM_DIRS),
    }


def probe_features(image_info: dict) -> dict[str, list]:
    """One valid record's raw features (black image, mask of 0s), to run the graph once."""
    height, width = image_info["height"], image_info["width"]
    image = encoding.encode_image(np.zeros((height, width, image_info["channels"]), np.uint8),
                                  image_info["format"])
    mask = encoding.encode_mask(np.zeros((height, width), np.uint8), image_info["mask_format"])
    return {schema.IMAGE_ENCODED: [image], schema.MASK_ENCODED: [mask], schema.CLASS_TEXT: [b""]}


def graph_statistics(output_dir: str, image_info: dict) -> dict[str, np.ndarray]:
    """The written transform graph's ``statistics/...`` outputs (one example's), by running it
    once on :func:`probe_features`."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel

    features = {key: tf.constant(value) for key, value in probe_features(image_info).items()}
    outputs = tft.TFTransformOutput(output_dir).transform_raw_features(features, drop_unused_features=True)
    return {key[len(STATISTICS_PREFIX):]: value.numpy()[0] for key, value in outputs.items()
            if key.startswith(STATISTICS_PREFIX)}


def read_statistics(output_dir: str, image_info: dict) -> dict:
    """Loads the written transform graph and reads its statistics back out (see module doc)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
    from tensorflow_transform import analyzers  # pylint: disable=import-outside-toplevel

    raw = graph_statistics(output_dir, image_info)
    # TFT writes one placeholder token into a vocabulary that would be empty (no class names).
    _, placeholder = analyzers.get_empy_vocabulary_dummy_value(tf.string)
    class_names = [name.decode("utf-8") for name
                   in tft.TFTransformOutput(output_dir).vocabulary_by_name(CLASS_NAMES) if name != placeholder]
    return summarize(raw, image_info, class_names)
