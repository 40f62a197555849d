"""Split assignment by stable hash of the example key: the same key always lands in the
same split, whatever the runner, the worker count or the order of inputs."""

from __future__ import annotations

from beam_etl.config import JobConfig
from beam_etl.hashing import stable_fraction

TRAINVAL = "trainval"  # Oxford-IIIT list name: train, less --val_fraction held out as val


def may_land_in(source_split: str, config: JobConfig) -> tuple[str, ...]:
    """The output splits an input whose source says ``source_split`` may land in
    (:func:`assign_split`'s)."""
    if source_split == TRAINVAL:
        return ("train", "val") if config.val_fraction > 0 else ("train",)
    return (source_split,)


def assign_split(key: str, source_split: str | None, config: JobConfig) -> str:
    """The output split of an example whose source said ``source_split``."""
    if source_split == TRAINVAL:
        return "val" if stable_fraction("val", key) < config.val_fraction else "train"
    if source_split is not None:
        return source_split
    point = stable_fraction("split", key)
    cumulative = 0.0
    chosen = None
    for name, fraction in config.split_fractions:
        if fraction <= 0:
            continue
        chosen = name
        cumulative += fraction
        if point < cumulative:
            return name
    return chosen  # rounding left point just above the sum: the last non-empty split
