"""The reading side: the tf.data loader, the transform graph it applies, and the output's
checker. TensorFlow only: nothing here imports Apache Beam, dask or ``beam_etl.beam``.

    from beam_etl import loader
    dataset = loader.make_dataset("OUT", "train", batch_size=64)

Importing the package imports nothing heavy: TensorFlow loads with the first name used from it,
so the job's own modules (which use :mod:`beam_etl.loader.transform_graph`'s numpy helpers)
start without it.
"""

import importlib
import sys

from beam_etl import native_logs, output_layout

# ``python -m beam_etl.loader.verify`` (or ``.report``, ``.cli``): Python imports this package
# first, with sys.argv[0] "-m" while it locates the module, and the command loads TensorFlow once
# its flags are parsed. Its command line is quiet as ``beam-etl``'s are (not a program importing us).
if sys.argv[:1] == ["-m"] and not native_logs.wants_verbose(sys.argv):
    native_logs.filter_native_logs()

IncompleteOutputError = output_layout.IncompleteOutputError

_FROM = {  # name -> the module that defines it
    **dict.fromkeys(("DEFAULT_SHUFFLE_BUFFER", "check_files", "denormalize",
                     "distribute", "load_manifest", "make_dataset", "normalization_layer",
                     "read_buffer_size", "split_files"), "beam_etl.loader.dataset"),
    "OutputMismatchError": "beam_etl.loader.listed_files",
    "main": "beam_etl.loader.cli",
}

__all__ = sorted([*_FROM, "IncompleteOutputError"])


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_FROM[name]), name)


def __dir__():
    return __all__
