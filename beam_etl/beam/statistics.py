"""Full-pass statistics of the training split with tensorflow-transform: the Beam step that
analyzes the job's records and writes the transform graph (:mod:`beam_etl.loader.transform_graph`).

The job feeds TFT the training split's records (original examples only: augmentation copies
would skew the statistics towards whatever the augmentation favours), as Arrow record batches
decoded from the serialized examples by tfx-bsl: TFT's record-batch path, so memory is bounded
by the batch size, never by the dataset.
"""

from __future__ import annotations

import apache_beam as beam

from beam_etl import metadata_schema, schema
from beam_etl.config import JobConfig
from beam_etl.output_layout import STAGING_DIR, TFT_TEMP_DIR, join
from beam_etl.loader.transform_graph import make_preprocessing_fn, probe_features, read_statistics

EMPTY_TRAINING_SPLIT = "the training split is empty"  # the manifest's statistics_absent
# Examples per record batch fed to the analyzers: 128 raw 128x128 images are 6 MB.
RECORD_BATCH_SIZE = 128


def placeholder_record(image_info: dict) -> bytes:
    """A serialized record of :func:`probe_features`: what tf.Transform analyzes when the
    training split is empty, so that the step completes (its result is then not published)."""
    features = probe_features(image_info)
    return schema.build_example(
        image=features[schema.IMAGE_ENCODED][0], image_format=image_info["format"],
        height=image_info["height"], width=image_info["width"], filename="", source_id="",
        mask=features[schema.MASK_ENCODED][0], mask_format=image_info["mask_format"], label=-1,
        label_name="")


def _statistics_or_absence(_, staged: str, image_info: dict, num_train: int) -> dict:
    if num_train == 0:
        return {"absent": EMPTY_TRAINING_SPLIT}
    return read_statistics(staged, image_info)




class AnalyzeAndWriteTransform(beam.PTransform):
    """Training examples -> TFT analysis -> ``transform_fn`` and ``transformed_metadata``,
    staged in ``OUTPUT/.incomplete/staged/`` for the commit.

    Returns a one-element PCollection: the statistics dict for the manifest, emitted once the
    transform graph is in place; ``{"absent": reason}`` when the training split is empty (the
    analysis then runs on one placeholder record, and its graph is not published).
    """

    def __init__(self, config: JobConfig, temp_dir: str | None = None):
        super().__init__()
        self._config = config
        # tf.Transform writes assets there while the job is built, not only when it runs
        self._temp_dir = temp_dir or join(config.output, TFT_TEMP_DIR)

    def expand(self, examples):
        # pylint: disable=import-outside-toplevel  # TFT is heavy; only this step needs it
        import tensorflow_transform.beam as tft_beam
        from tfx_bsl.public import tfxio

        config = self._config
        record_source = tfxio.TFExampleBeamRecord(
            physical_format="inmem", telemetry_descriptors=["beam_etl"],
            # every feature of the records, as metadata/schema.pbtxt says: the graph's input
            # signature is then the raw schema, as TFX trainers that parse with it expect
            schema=metadata_schema.records_schema(config.image_info(), config.mask_values))
        image_info = config.image_info()
        train = (examples
                 | "KeepTrainOriginals" >> beam.Filter(lambda e: e.split == "train" and e.copy == 0)
                 | "SerializedExamples" >> beam.Map(lambda e: e.serialized))
        num_train = beam.pvalue.AsSingleton(train | "CountTraining" >> beam.combiners.Count.Globally())
        placeholder = (examples.pipeline
                       | "OnePlaceholder" >> beam.Create([None])
                       | "IfTrainingIsEmpty" >> beam.FlatMap(
                           lambda _, n, info: [placeholder_record(info)] if n == 0 else [], num_train, image_info))
        record_batches = ((train, placeholder)
                          | "FlattenTraining" >> beam.Flatten()
                          | "ToRecordBatches" >> record_source.BeamSource(batch_size=RECORD_BATCH_SIZE))
        # pyarrow.RecordBatch of every feature, RECORD_BATCH_SIZE rows
        preprocessing_fn = make_preprocessing_fn(image_info, config.mask_values)
        staged = join(config.output, STAGING_DIR)
        with tft_beam.Context(temp_dir=self._temp_dir):
            transform_fn = ((record_batches, record_source.TensorAdapterConfig())
                            | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(preprocessing_fn))
            written = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(staged)
        return written | "ReadStatistics" >> beam.Map(_statistics_or_absence, staged, image_info, num_train)
