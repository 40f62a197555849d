"""Importing Beam without the optional integrations the job never uses.

``import apache_beam`` imports every optional integration whose library it finds installed.
Two of those libraries are always installed beside Beam (they are among its own requirements)
and the job uses neither: pandas, for Beam's DataFrame API and its pandas type conversions, and
pymongo (with its ``bson``), for MongoDB IO. They cost about 0.35 s of the 1.2 s that the
launcher spends importing Beam and the job's steps on these cores, on the path every local run
waits for (BENCHMARKS.md, "Where the wall goes"). Beam imports each of them inside
``try: ... except ImportError``, and goes on without the integration where the import fails.

:func:`import_beam` makes those imports fail for the time Beam takes to load, then lets them
succeed again: a later ``import pandas`` (tf.Transform's, a user's) loads pandas as usual. What
is lost in the process is only what the job does not use: Beam's DataFrame type conversions and
MongoDB IO. The launcher (``pipelines.preprocess``) and the warm parent of the worker processes
(:mod:`beam_etl.beam.warm_workers`) call it before anything imports Beam; where Beam is already
loaded it does nothing.

Standard library only at import.
"""

from __future__ import annotations

import importlib
import logging
import sys

UNUSED = ("pandas", "pymongo", "bson")  # top-level packages Beam imports only if it can
# What Beam logs when its MongoDB IO finds no pymongo: not the user's concern here.
_MONGODB_LOG = "apache_beam.io.mongodbio"


def import_beam() -> None:
    """Imports ``apache_beam`` without :data:`UNUSED`, unless it is loaded already. (The rest of
    Beam that the job loads imports neither.)"""
    if "apache_beam" in sys.modules:
        return
    blocked = [name for name in UNUSED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # importing it raises ImportError, as when it is not installed
    mongodb_log = logging.getLogger(_MONGODB_LOG)
    disabled, mongodb_log.disabled = mongodb_log.disabled, True
    try:
        importlib.import_module("apache_beam")
    finally:
        mongodb_log.disabled = disabled
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
