"""The reading side: the tf.data loader, the transform graph it applies, and the output's
checker. TensorFlow only: nothing here imports Apache Beam, dask or ``beam_etl.beam``.

    from beam_etl import loader
    dataset = loader.make_dataset("OUT", "train", batch_size=64)
"""

from beam_etl.loader.dataset import (DEFAULT_SHUFFLE_BUFFER, OutputMismatchError, check_files, denormalize,
                                     distribute, load_manifest, make_dataset, normalization_layer,
                                     read_buffer_size, split_files)
from beam_etl.loader.cli import main
from beam_etl.output_layout import IncompleteOutputError

__all__ = ["DEFAULT_SHUFFLE_BUFFER", "IncompleteOutputError", "OutputMismatchError", "check_files",
           "denormalize", "distribute", "load_manifest", "main", "make_dataset", "normalization_layer",
           "read_buffer_size", "split_files"]
