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

A command that reaches no Google Cloud service (:func:`uses_google_cloud`: no ``gs://`` path, no
BigQuery source, not Dataflow) also loads Beam without the Google Cloud client libraries
(:data:`GOOGLE_CLOUD`): Beam's Cloud Storage filesystem, BigQuery and Pub/Sub IO and Dataflow
runner, which it imports in the same way, cost about 0.45 s more of the 1.1 s. Such a process
cannot read ``gs://`` afterwards, so the choice is made from the command line, conservatively:
any argument that mentions ``gs://``, BigQuery or Dataflow, or names a Google Cloud project,
region or location, keeps them.

Standard library only at import.
"""

from __future__ import annotations

import importlib
import logging
import sys

UNUSED = ("pandas", "pymongo", "bson")  # top-level packages Beam imports only if it can
GOOGLE_CLOUD = ("google.cloud", "google.auth", "google.api_core", "apitools")  # the same, for Google Cloud
# What in a command line may reach Google Cloud (lower-cased): the clients must be loaded.
_GOOGLE_CLOUD_WORDS = ("gs://", "bigquery", "dataflow", "--project", "--region", "--zone", "--temp_location",
                       "--staging_location", "--sdk_container_image", "--service_account", "--dry_run")
# What Beam logs when its MongoDB IO finds no pymongo: not the user's concern here.
_MONGODB_LOG = "apache_beam.io.mongodbio"


def uses_google_cloud(argv: list[str]) -> bool:
    """Whether the command line ``argv`` may reach a Google Cloud service (conservatively)."""
    return any(word in arg.lower() for arg in argv for word in _GOOGLE_CLOUD_WORDS)


def import_beam(google_cloud: bool = True) -> None:
    """Imports ``apache_beam`` without :data:`UNUSED` (and without :data:`GOOGLE_CLOUD` unless
    ``google_cloud``), unless it is loaded already. (The rest of Beam that the job loads imports
    none of them.)"""
    if "apache_beam" in sys.modules:
        return
    blocked = [name for name in UNUSED + (() if google_cloud else GOOGLE_CLOUD) if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # importing it raises ImportError, as when it is not installed
    # (Beam's MongoDB IO logs that it found no pymongo; its BigQuery clients, that they found no
    # apitools, through ``logging.warning``, which would first give a root logger with no handler
    # one on stderr for good: a worker's logs would then be printed on the job's stderr. A
    # handler that drops everything, for the time of the import, keeps the root logger as it was.)
    root = logging.getLogger()
    quieted = [logging.getLogger(_MONGODB_LOG)] + ([] if google_cloud else [root])
    disabled = [log.disabled for log in quieted]
    for log in quieted:
        log.disabled = True
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        importlib.import_module("apache_beam")
    finally:
        root.removeHandler(placeholder)
        for log, was in zip(quieted, disabled):
            log.disabled = was
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
