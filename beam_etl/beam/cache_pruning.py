"""What a prune of the cache of outcomes keeps (:mod:`beam_etl.beam.prune_cache`, the command):
the outcomes and input digests each named output's lineage index uses, by the cache it was made
with, every output and cache checked before anything is pruned."""

from __future__ import annotations

import os

from beam_etl import lineage
from beam_etl.beam import filesystem, outcome_store
from beam_etl.output_layout import CACHE_DIR, LEASE, cache_folder, join


def used_by(output: str) -> tuple[str | None, set[str], set[str]]:
    """``(cache, outcome names, input SHA-256s)`` of the complete output in ``output``: the
    cache it was made with (its manifest's ``--cache``, else its own; None with ``--no_cache``),
    and what of the cache it was made from."""
    manifest, index = lineage.read_output(output)
    flags = manifest.get("flags", {})
    cache = None if not flags.get("use_cache", True) else cache_folder(output, flags.get("cache_dir"))
    outcomes = {entry["outcome"] for entry in index.values()}
    digests = {entry[field] for entry in index.values() for field in ("image_sha256", "mask_sha256")}
    return cache, outcomes, digests


def _place(path: str) -> str:
    """``path`` spelled one way: a local folder's real path, a ``gs://`` folder without its final slash."""
    return os.path.realpath(filesystem.local_path(path)) if filesystem.is_local(path) else path.rstrip("/")


def caches_of(outputs: list[str], named: str | None) -> dict[str, list[tuple[set[str], set[str]]]]:
    """``{cache: [(outcomes, digests) of each output made with it]}``; raises ValueError, naming
    what is wrong, when an output is in use or not complete, was made with another cache than
    ``named`` (``--cache``) or with none, or a cache is not there."""
    # By the cache's place (_place), so that one cache spelled two ways is one: the first spelling
    # given, and what each output made with it uses.
    caches: dict[str, tuple[str, list]] = {}
    for output in outputs:
        if filesystem.exists(join(output, LEASE)):
            raise ValueError(f"a run holds {output} (or died there: rerun it first)")
        try:
            cache, outcomes, digests = used_by(output)
        except OSError as error:
            raise ValueError(str(error)) from None
        if cache is None:
            raise ValueError(f"{output} was made with --no_cache: no cache holds its outcomes")
        if cache != join(output, CACHE_DIR) and filesystem.is_local(cache) \
                and not os.path.isabs(filesystem.local_path(cache)):  # (jobs record it absolute now)
            raise ValueError(f"{output} was made with --cache {cache!r}, relative to the folder that run "
                             "started in, which is not recorded: rerun it to record the cache's place")
        if named is not None and _place(named) != _place(cache):
            raise ValueError(f"--cache {named!r}: {output} was made with the cache {cache!r}")
        caches.setdefault(_place(named or cache), (named or cache, []))[1].append((outcomes, digests))
    for spelled, _ in caches.values():
        store = outcome_store.OutcomeStore(spelled)
        flag = "--cache " if named is not None else ""
        if not store.exists():
            raise ValueError(f"{flag}{spelled!r} holds no cache of outcomes "
                             f"(no {join(spelled, outcome_store.SEGMENTS)})")
        refusal = store.refusal()
        if refusal is not None:  # (every cache checked before any is pruned)
            raise ValueError(f"{flag}{spelled!r}: cannot write to the cache: {refusal}")
    return dict(caches.values())
