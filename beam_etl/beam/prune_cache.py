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

import sys

from beam_etl.config import FlagParser, flag_type, output_folder


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.beam.prune_cache") -> int:
    parser = FlagParser(prog=prog, description=__doc__.split("\n\n", maxsplit=1)[0], allow_abbrev=False)
    parser.add_argument("outputs", nargs="+", metavar="OUT", type=flag_type(output_folder),
                        help="Outputs whose outcomes are kept.")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="The cache the outputs were made with (their --cache), named to be sure: an "
                             "output made with another is refused. Default: the cache each output's "
                             "manifest names (its own, where it was made without --cache).")
    args = parser.parse_args(argv)
    # Beam (its file systems, for gs://) takes seconds to load: only now that every flag is right
    from beam_etl.beam import cache_pruning, outcome_store  # pylint: disable=import-outside-toplevel

    try:
        caches = cache_pruning.caches_of(args.outputs, args.cache)
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
