"""The transform graph that training and serving share, as tf.Transform writes it
(``transform_fn/`` and ``transformed_metadata/``), and reading it back. TensorFlow only, no
Beam: the loader and a trainer import this; the job (:mod:`beam_etl.beam.statistics`) makes it.

The statistics are the job's, summed exactly in the per-image step
(:mod:`beam_etl.image.pixel_statistics`):

- per-channel pixel sums and sums of squares (int64), hence mean and standard deviation;
- how many pixels of each of the 256 mask values, and in how many images each appears, hence
  class pixel frequencies and the fraction of images that contain each class;
- the class names (``image/class/text``, Oxford breeds) as a tf.Transform vocabulary file,
  :data:`CLASS_NAMES`, ordered as ``tft.vocabulary`` orders it.

The graph reads them from two assets of its SavedModel, :data:`STATISTICS` (one integer per
line, :func:`statistics_lines`) and :data:`CLASS_NAMES`, through lookup tables, as
``tft.apply_vocabulary`` reads a vocabulary: so the graph itself is the same for every run of
the same record format, and the job writes it once per machine and copies it
(:mod:`beam_etl.beam.transform_template`). Its outputs are what a model consumes: ``image``
float32 normalized with the mean and standard deviation, ``mask`` class ids 0..K-1 (the K
mask values in increasing order: trimap 1, 2, 3 become 0, 1, 2; a value outside them becomes
-1), ``label`` the id of the class name in the vocabulary (-1 where unknown). TFT only emits
float32, int64 and string features, so the mask is int64 here and the loader casts it to int32.

``tft.TFTransformOutput(OUTPUT)`` then works on the job's output. The statistics are also
outputs of the graph (``statistics/...``, the same for every example), so that a model handed
the transform layer reaches them (class weights, for one) without the manifest.
"""

from __future__ import annotations

import numpy as np

from beam_etl import schema
from beam_etl.image import encoding
from beam_etl.output_layout import TRANSFORM_DIRS

CLASS_NAMES = "class_names"  # TFT vocabulary file name, an asset of the graph
STATISTICS = "statistics"  # the statistics asset's file name
IMAGE, MASK, LABEL = "image", "mask", "label"
STATISTICS_PREFIX = "statistics/"
NUM_MASK_VALUES = 256  # masks are uint8
# What tf.Transform writes into a vocabulary that would be empty
# (tensorflow_transform.analyzers.get_empy_vocabulary_dummy_value; a test holds them equal).
EMPTY_VOCABULARY_TOKEN = "49d0cd50-04bb-48c0-bc6f-5b575dce351a"
# The record features the transform reads. Its input signature is every raw feature (what a TFX
# trainer parsing with metadata/schema.pbtxt passes); the loader parses and passes only these.
RAW_FEATURES = (schema.IMAGE_ENCODED, schema.MASK_ENCODED, schema.CLASS_TEXT)


def _fields(channels: int) -> list[tuple[str, int]]:
    """The statistics asset's fields, in order, with their lengths."""
    return [("num_images", 1), ("channel_sum", channels), ("channel_sum_squares", channels),
            ("value_pixels", NUM_MASK_VALUES), ("value_images", NUM_MASK_VALUES),
            ("is_class", NUM_MASK_VALUES)]


def raw_statistics(totals, mask_values: tuple[int, ...] | None, channels: int) -> dict[str, np.ndarray]:
    """A :class:`~beam_etl.image.pixel_statistics.Totals` as the graph's ``statistics/...``
    values. ``mask_values``: the label set (``--mask_values``); without it, the values seen."""
    value_pixels = totals.value_pixels.astype(np.int64)
    if mask_values is None:
        is_class = value_pixels > 0
    else:
        is_class = np.isin(np.arange(NUM_MASK_VALUES), mask_values)
    empty = np.zeros(channels, np.int64)
    return {
        "num_images": np.int64(totals.num_images),
        "channel_sum": empty if totals.channel_sum is None else totals.channel_sum.astype(np.int64),
        "channel_sum_squares": empty if totals.channel_sum_squares is None else totals.channel_sum_squares.astype(np.int64),
        "value_pixels": value_pixels,
        "value_images": totals.value_images.astype(np.int64),
        "class_ids": np.where(is_class, np.cumsum(is_class) - 1, -1).astype(np.int64),
    }


def statistics_lines(raw: dict[str, np.ndarray], channels: int) -> str:
    """The statistics asset's text: one integer per line, in :func:`_fields`' order."""
    values = dict(raw, is_class=(raw["class_ids"] >= 0).astype(np.int64))
    numbers = np.concatenate([np.reshape(values[name], [length]) for name, length in _fields(channels)])
    return "".join(f"{int(n)}\n" for n in numbers)


def vocabulary_lines(class_names: list[str]) -> str:
    """The :data:`CLASS_NAMES` file's text, as tf.Transform writes it."""
    return "".join(f"{name}\n" for name in (class_names or [EMPTY_VOCABULARY_TOKEN]))


def make_preprocessing_fn(image_info: dict, statistics_file: str, class_names_file: str):
    """The TFT ``preprocessing_fn`` for records of ``image_info`` (the manifest's ``image``),
    reading the statistics from the two asset files (see the module's docstring)."""

    def preprocessing_fn(inputs):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        # Made in the init scope, as tf.Transform makes its vocabularies' tables: initialized
        # once when the SavedModel loads, not on every call of the graph.
        with tf.init_scope():
            lines = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                statistics_file, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
                tf.int64, tf.lookup.TextFileIndex.WHOLE_LINE), default_value=0)
            vocabulary = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                class_names_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=-1)
        fields, offset = {}, 0
        for name, length in _fields(image_info["channels"]):
            fields[name] = lines.lookup(tf.range(offset, offset + length, dtype=tf.int64))
            offset += length
        statistics = {
            "num_images": tf.reshape(fields["num_images"], []),
            "channel_sum": fields["channel_sum"],
            "channel_sum_squares": fields["channel_sum_squares"],
            "value_pixels": fields["value_pixels"],
            "value_images": fields["value_images"],
            "is_class": fields["is_class"] > 0,
        }
        return transform_outputs(inputs, image_info, statistics, vocabulary.lookup)

    return preprocessing_fn


def transform_outputs(inputs, image_info: dict, statistics: dict, label_ids):
    """The graph's outputs from its raw inputs, the statistics as tensors (``num_images``,
    ``channel_sum``, ``channel_sum_squares``, ``value_pixels``, ``value_images``, ``is_class``)
    and ``label_ids`` (class names -> ids, -1 where unknown)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from beam_etl.loader import tf_decoding  # pylint: disable=import-outside-toplevel

    height, width = image_info["height"], image_info["width"]
    images = tf_decoding.decode_images(inputs[schema.IMAGE_ENCODED], image_info)  # uint8[B,H,W,3]
    masks = tf_decoding.decode_masks(inputs[schema.MASK_ENCODED], image_info)  # uint8[B,H,W]
    batch = tf.shape(images)[0]
    num_images = statistics["num_images"]
    channel_sum, channel_sum_squares = statistics["channel_sum"], statistics["channel_sum_squares"]
    # Every pixel the statistics counted has one mask value: height x width a training original,
    # but for --resize pad's padding, which they leave out.
    num_pixels = tf.cast(tf.reduce_sum(statistics["value_pixels"]), tf.float64)
    mean = tf.cast(channel_sum, tf.float64) / tf.maximum(num_pixels, 1.0)
    variance = tf.cast(channel_sum_squares, tf.float64) / tf.maximum(num_pixels, 1.0) - mean * mean
    std = tf.sqrt(tf.maximum(variance, 0.0))
    std = tf.where(std > 0, std, tf.ones_like(std))  # a constant channel: leave its scale alone
    is_class = statistics["is_class"]
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
        LABEL: label_ids(inputs[schema.CLASS_TEXT]),
    }
    channels, values = [image_info["channels"]], [NUM_MASK_VALUES]
    named = {"num_images": (num_images, []), "channel_sum": (channel_sum, channels),
             "channel_sum_squares": (channel_sum_squares, channels),
             "value_pixels": (statistics["value_pixels"], values),
             "value_images": (statistics["value_images"], values),
             "class_ids": (class_ids, values), "pixel_scale": (pixel_scale, channels),
             "pixel_offset": (pixel_offset, channels)}
    outputs.update({STATISTICS_PREFIX + name: per_example(value, shape)
                    for name, (value, shape) in named.items()})
    return outputs


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
    neighbour and augmentation brings in no fill value, so copies hold no new ones). Never
    with ``--resize pad``, whose padding holds a value that is no class.
    """
    stats = manifest.get("statistics")
    if stats is None or manifest.get("image", {}).get("mask_ignore_value") is not None:
        return False
    return manifest["flags"].get("mask_values") is not None or split == stats["split"]


def summarize(raw: dict[str, np.ndarray], image_info: dict, class_names: list[str]) -> dict:
    """The manifest's ``statistics``, from the graph's ``statistics/...`` outputs (one example's)."""
    num_images = int(raw["num_images"])
    num_pixels = int(raw["value_pixels"].sum())  # all of each image's but --resize pad's padding
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
