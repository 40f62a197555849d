"""Full-pass statistics of the training split: the examples' shares, computed in the per-image
step (:mod:`beam_etl.image.pixel_statistics`), summed exactly by one CombineFn, and written as
tf.Transform's transform graph (:mod:`beam_etl.beam.transform_template`) and the manifest's
``statistics``.

Only the training split's original examples count: augmentation copies would skew the
statistics towards whatever the augmentation favours. Each share is about a hundred bytes, and
Beam combines them where they are made (combiner lifting) before one worker writes the graph:
no step decodes a pixel twice or runs TensorFlow per example.
"""

from __future__ import annotations

import apache_beam as beam

from beam_etl import code_version
from beam_etl.beam import transform_template
from beam_etl.config import JobConfig
from beam_etl.image.pixel_statistics import ExampleSums, Totals
from beam_etl.loader import transform_graph
from beam_etl.output_layout import join, staging_dir

EMPTY_TRAINING_SPLIT = "the training split is empty"  # the manifest's statistics_absent


class SumStatistics(beam.CombineFn):
    """:class:`ExampleSums` -> their :class:`Totals` (the totals of none for no input)."""

    def create_accumulator(self) -> Totals:
        return Totals()

    def add_input(self, mutable_accumulator: Totals, element: ExampleSums) -> Totals:
        return mutable_accumulator.add(element)

    def merge_accumulators(self, accumulators) -> Totals:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: Totals) -> Totals:
        return accumulator


def write_statistics(totals: Totals, output: str, run_id: str, image_info: dict, mask_values,
                     graph_code: dict[str, str] | None = None) -> dict:
    """The transform graph staged by run ``run_id`` in ``output``; returns the manifest's ``statistics``, or
    ``{"absent": reason}`` (and no graph) when the training split is empty. ``graph_code``: the
    version of the graph's code the run started with (:data:`transform_template.GRAPH_ENTRIES`),
    which this worker must run: a template made by other code would be cached as this code's."""
    stale = code_version.stale(graph_code, transform_template.GRAPH_ENTRIES) if graph_code is not None else []
    if stale:
        raise RuntimeError(code_version.stale_message("transform graph's", stale))
    if totals.num_images == 0:
        return {"absent": EMPTY_TRAINING_SPLIT}
    raw = transform_graph.raw_statistics(totals, mask_values, image_info["channels"])
    class_names = totals.vocabulary()
    transform_template.write_transform(join(output, staging_dir(run_id)), image_info, mask_values, raw, class_names)
    return transform_graph.summarize(raw, image_info, class_names)


class WriteStatistics(beam.PTransform):
    """The training originals' :class:`ExampleSums` -> the transform graph, staged in
    run ``run_id``'s staging folder for the commit; returns a one-element PCollection, the
    manifest's ``statistics`` (``{"absent": reason}`` for an empty training split)."""

    def __init__(self, config: JobConfig, run_id: str):
        super().__init__()
        self._config = config
        self._run_id = run_id

    def expand(self, sums):
        config = self._config
        return (sums
                | "SumShares" >> beam.CombineGlobally(SumStatistics())
                | "WriteTransformGraph" >> beam.Map(write_statistics, config.output, self._run_id, config.image_info(),
                                                    config.mask_values,
                                                    code_version.as_imported(transform_template.GRAPH_ENTRIES)))
