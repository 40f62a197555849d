"""tf.Transform's own full pass over a job's records, as the reference its transform graph is
held to: the same outputs (:func:`beam_etl.loader.transform_graph.transform_outputs`), with the
statistics from ``tft.sum`` analyzers over the decoded records and the class names from
``tft.vocabulary``, instead of the job's sums."""

from __future__ import annotations

import apache_beam as beam
import tensorflow_transform.beam as tft_beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from tfx_bsl.public import tfxio

from beam_etl import metadata_schema, schema
from beam_etl.loader import transform_graph

NUM_MASK_VALUES = transform_graph.NUM_MASK_VALUES


def preprocessing_fn_with_analyzers(image_info: dict, mask_values):
    def preprocessing_fn(inputs):
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel

        from beam_etl.loader import tf_decoding  # pylint: disable=import-outside-toplevel

        images = tf_decoding.decode_images(inputs[schema.IMAGE_ENCODED], image_info)
        masks = tf_decoding.decode_masks(inputs[schema.MASK_ENCODED], image_info)
        batch = tf.shape(images)[0]
        pixels = tf.cast(images, tf.int64)
        per_image = tf.math.bincount(tf.reshape(tf.cast(masks, tf.int32), [batch, -1]), minlength=NUM_MASK_VALUES,
                                     maxlength=NUM_MASK_VALUES, axis=-1, dtype=tf.int64)
        value_pixels = tf.reshape(tft.sum(per_image, reduce_instance_dims=False), [NUM_MASK_VALUES])
        if mask_values is None:
            is_class = value_pixels > 0
        else:
            is_class = tf.constant([value in mask_values for value in range(NUM_MASK_VALUES)])
        statistics = {
            "num_images": tft.sum(tf.ones([batch], tf.int64)),
            "channel_sum": tft.sum(tf.reduce_sum(pixels, axis=[1, 2]), reduce_instance_dims=False),
            "channel_sum_squares": tft.sum(tf.reduce_sum(pixels * pixels, axis=[1, 2]), reduce_instance_dims=False),
            "value_pixels": value_pixels,
            "value_images": tf.reshape(tft.sum(tf.cast(per_image > 0, tf.int64), reduce_instance_dims=False),
                                       [NUM_MASK_VALUES]),
            "is_class": is_class,
        }
        names = inputs[schema.CLASS_TEXT]
        vocabulary = tft.vocabulary(tf.boolean_mask(names, tf.strings.length(names) > 0),
                                    vocab_filename=transform_graph.CLASS_NAMES)
        return transform_graph.transform_outputs(
            inputs, image_info, statistics, lambda x: tft.apply_vocabulary(x, vocabulary, default_value=-1))

    return preprocessing_fn


def analyze_records(records: list[bytes], image_info: dict, mask_values, output: str, temp_dir: str) -> None:
    """tf.Transform's full pass over ``records`` (serialized training originals) -> its
    ``transform_fn/`` and ``transformed_metadata/`` in ``output``."""
    record_source = tfxio.TFExampleBeamRecord(
        physical_format="inmem", telemetry_descriptors=["beam_etl_tests"],
        schema=metadata_schema.records_schema(image_info, mask_values))
    # On the FnApiRunner, in this process, as the job's own template is built: Beam's DirectRunner
    # would first try its PrismRunner (a download) and leave empty folders in the temporary folder.
    with beam.Pipeline(runner=FnApiRunner()) as pipeline, tft_beam.Context(temp_dir=temp_dir):
        batches = (pipeline | beam.Create(records) | record_source.BeamSource(batch_size=16))
        transform_fn = ((batches, record_source.TensorAdapterConfig())
                        | tft_beam.AnalyzeDataset(preprocessing_fn_with_analyzers(image_info, mask_values)))
        _ = transform_fn | tft_beam.WriteTransformFn(output)
