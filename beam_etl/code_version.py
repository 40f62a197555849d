"""The version of a piece of the job's code, as the SHA-256 of its modules' source: what a cache
of the code's results is keyed by, so that a change in the code finds no stale result.

A version describes the code that runs only if the files did not change between their import
and their reading: a run takes the version of its per-image chain as it starts, before any of
it is imported, and each process that runs the chain checks, once it has imported it, that the
files are still those (:func:`changed`). Standard library only: the command reads it first."""

from __future__ import annotations

import hashlib
import importlib.util

# The code that makes an outcome (beam_etl.beam.example_cache): a change in any of them is a new
# chain. Every module of the job that the chain and example_cache import, beam_etl.config
# (constants such as the padding's mask value) included: a test holds the list whole.
CHAIN_MODULES = ("beam_etl.image.augmentation", "beam_etl.image.chain", "beam_etl.image.decoding",
                 "beam_etl.image.encoding", "beam_etl.image.pixel_statistics", "beam_etl.image.resizing",
                 "beam_etl.image.validation", "beam_etl.schema", "beam_etl.tf_example", "beam_etl.hashing",
                 "beam_etl.elements", "beam_etl.config", "beam_etl.lineage", "beam_etl.code_version",
                 "beam_etl.beam.example_cache")


def code_version(module_names) -> dict[str, str]:
    """``{module name: SHA-256 of its source}``, read without importing the modules."""
    version = {}
    for name in module_names:
        with open(importlib.util.find_spec(name).origin, "rb") as source:
            version[name] = hashlib.sha256(source.read()).hexdigest()
    return version


def changed(version: dict[str, str]) -> list[str]:
    """The modules of ``version`` whose source is no longer the one it was taken from (or is
    gone: a module removed or renamed)."""
    found = []
    for name, digest in version.items():
        try:
            now = code_version([name])[name]
        except (ImportError, AttributeError, TypeError, OSError):  # (no module, or no source file, of that name)
            now = None
        if now != digest:
            found.append(name)
    return sorted(found)
