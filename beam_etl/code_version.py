"""The version of a piece of the job's code, as the SHA-256 of its modules' source: what a cache
of the code's results is keyed by, so that a change in the code finds no stale result."""

from __future__ import annotations

import hashlib
import importlib.util


def code_version(module_names) -> dict[str, str]:
    """``{module name: SHA-256 of its source}``, read without importing the modules."""
    version = {}
    for name in module_names:
        with open(importlib.util.find_spec(name).origin, "rb") as source:
            version[name] = hashlib.sha256(source.read()).hexdigest()
    return version
