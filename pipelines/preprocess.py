"""Preprocess image-segmentation data into sharded TFRecords, a manifest and a rejected list.

Locally, with the DirectRunner::

    python -m beam_etl.tools.sample_data --output DATA --num_images 200 --seed 0
    python -m pipelines.preprocess --oxford_pets DATA --output OUT --image_size 128
    python -m pipelines.preprocess --images 'DATA/images/*.jpg' \\
        --masks 'DATA/annotations/trimaps/*.png' --output OUT2 --image_size 128 \\
        --runner DirectRunner --direct_running_mode multi_processing --direct_num_workers 2

On a dask.distributed cluster (``pip install .[dask]``; docs/dask.md)::

    python -m pipelines.preprocess --oxford_pets DATA --output OUT --dask_local_workers 2
    python -m pipelines.preprocess --oxford_pets DATA --output OUT \\
        --runner beam_dask.DaskRunner --dask_client_address HOST:8786

On Dataflow (docs/dataflow.md for the container)::

    python -m pipelines.preprocess --oxford_pets gs://BUCKET/pets --output gs://BUCKET/out \\
        --runner DataflowRunner --project PROJECT --region REGION \\
        --temp_location gs://BUCKET/tmp --sdk_container_image IMAGE
"""

from __future__ import annotations

import logging
import sys

from beam_etl.beam import launch, options


def run(argv: list[str] | None = None, prog: str = "python -m pipelines.preprocess") -> dict | None:
    """Parses ``argv`` (default: the command line) and runs the job; returns the manifest (None
    for a dry run, or a job submitted with ``--no_wait_until_finish``)."""
    config, pipeline_options = options.parse_args(
        sys.argv[1:] if argv is None else argv,
        prog=prog, description=__doc__.split("\n\n", maxsplit=1)[0])
    return launch.launch(config, pipeline_options)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    run()
