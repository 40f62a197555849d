"""The cache of outcomes cut down to what the named outputs use.

    python -m beam_etl.beam.prune_cache OUT                       # the cache OUT was made with
    python -m beam_etl.beam.prune_cache OUT OTHER --cache DIR     # a cache the outputs share

A cache keeps every outcome written to it: each flag or code change that shapes examples adds
a version of every input, and nothing else removes one. This keeps one intact copy of each
outcome the outputs' lineage indexes name, and the digests of their inputs' bytes, written anew;
then it deletes the cache files that were there before. What else the cache held is computed
again by the run that needs it (an output never depends on its cache); so are the outcomes of
rejected inputs, which no lineage index names.

Each output's manifest names the cache it was made with (``--cache``, or the output's own).
Refused (exit status 2), with nothing pruned: while an output named has a run's lease (a run in
progress, or one that died: rerun it first); for an output made with ``--no_cache``, or with
another cache than ``--cache`` names (the same folder spelled another way is the same cache), or
with a relative ``--cache`` recorded (before runs recorded it absolute: rerun it); for a cache
folder that holds no cache of outcomes (a mistyped ``--cache``), or one this user may not write
to; and while another prune holds the cache. The files of a cache this user may not read or
delete (another user's, in a shared cache) are left as they are. A prune killed leaves its lock
(``prune.lock``, a lease: :func:`beam_etl.beam.lease.take_lock`); the next one breaks it once the
killed process is gone. Only the files the cache's
writers made are read and deleted (:func:`beam_etl.beam.outcome_store.is_writer_file`).

Run it when no job uses the cache: a run of an output not named (sharing ``--cache``), or one
that starts meanwhile, loses from the cache what it writes to files the prune deletes, and
computes again what it would have read from them; its output is unaffected. The kept copies are
on disk before any old file is deleted.
"""

from __future__ import annotations

import os
import sys

from beam_etl import lineage
from beam_etl.beam import filesystem, outcome_store
from beam_etl.config import FlagParser, flag_type, output_folder
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


def _caches(outputs: list[str], named: str | None) -> dict[str, list[tuple[set[str], set[str]]]]:
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


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.beam.prune_cache") -> int:
    parser = FlagParser(prog=prog, description=__doc__.split("\n\n", maxsplit=1)[0], allow_abbrev=False)
    parser.add_argument("outputs", nargs="+", metavar="OUT", type=flag_type(output_folder),
                        help="Outputs whose outcomes are kept.")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="The cache the outputs were made with (their --cache), named to be sure: an "
                             "output made with another is refused. Default: the cache each output's "
                             "manifest names (its own, where it was made without --cache).")
    args = parser.parse_args(argv)
    try:
        caches = _caches(args.outputs, args.cache)
    except ValueError as error:
        print(f"{prog}: {error}; nothing was pruned", file=sys.stderr)
        return 2
    for cache, kept in caches.items():
        try:
            counts = outcome_store.OutcomeStore(cache).prune(set().union(*(outcomes for outcomes, _ in kept)),
                                                             set().union(*(digests for _, digests in kept)))
        except RuntimeError as error:
            print(f"{prog}: {error}; {cache} was not pruned", file=sys.stderr)
            return 2
        left = f"; left {len(counts['left']):,} files it cannot read or delete" if counts["left"] else ""
        print(f"{cache}: kept {counts['entries_kept']:,} of {counts['entries']:,} outcomes and "
              f"{counts['digests_kept']:,} digests of {counts['digests']:,}{left}")
    return 0


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    sys.exit(main())
