"""Stable hashing: the only source of pseudo-randomness and partitioning in the job.

Python's ``hash()`` is salted per process, so anything that decides a split, a shard or an
augmentation must go through these functions instead; a retried bundle, another worker or
another runner then reaches the same decision and writes the same bytes.
"""

from __future__ import annotations

import hashlib

import numpy as np

_SEPARATOR = b"\x1f"  # ASCII unit separator: cannot appear in a key by accident.


def stable_hash(*parts: str | int) -> int:
    """A 64-bit unsigned hash of ``parts``, identical on every machine and Python version."""
    message = _SEPARATOR.join(str(part).encode("utf-8") for part in parts)
    return int.from_bytes(hashlib.blake2b(message, digest_size=8).digest(), "big")


def stable_fraction(*parts: str | int) -> float:
    """A number in [0, 1), uniformly distributed over keys."""
    return stable_hash(*parts) / 2.0**64


def rng_for(seed: int, key: str, copy: int) -> np.random.Generator:
    """The random generator of augmentation copy ``copy`` of example ``key``."""
    return np.random.default_rng(stable_hash("augment", seed, key, copy))
