"""The cache of outcomes cut down to what the named outputs use.

    python -m beam_etl.beam.prune_cache OUT                       # OUT's own cache
    python -m beam_etl.beam.prune_cache OUT OTHER --cache DIR     # a cache the outputs share

A cache keeps every outcome written to it: each flag or code change that shapes examples adds
a version of every input, and nothing else removes one. This keeps one intact copy of each
outcome the outputs' lineage indexes name, and the digests of their inputs' bytes, written anew;
then it deletes the cache files that were there before. What else the cache held is computed
again by the run that needs it (an output never depends on its cache); so are the outcomes of
rejected inputs, which no lineage index names.

Refused (exit status 2) while an output named has a run's lease (a run in progress, or one that
died: rerun it first), and while another prune holds the cache. Run it when no job writes to
the cache: a run of an output not named (sharing ``--cache``), or one that starts meanwhile,
loses from the cache what it writes to files the prune deletes; those outcomes are computed
again by a later run (its output is unaffected). The kept copies are on disk before any old
file is deleted.
"""

from __future__ import annotations

import argparse
import sys

from beam_etl import diff
from beam_etl.beam import filesystem, outcome_store
from beam_etl.output_layout import CACHE_DIR, LEASE, join


def used_by(output: str) -> tuple[set[str], set[str]]:
    """``(outcome names, input SHA-256s)`` the complete output in ``output`` was made from."""
    _, index = diff.read_index(output)
    outcomes = {entry["outcome"] for entry in index.values()}
    digests = {entry[field] for entry in index.values() for field in ("image_sha256", "mask_sha256")}
    return outcomes, digests


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.beam.prune_cache") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("outputs", nargs="+", metavar="OUT", help="Outputs whose outcomes are kept.")
    parser.add_argument("--cache", default=None, metavar="DIR",
                        help="The cache the outputs share (their --cache); default: each output's own.")
    args = parser.parse_args(argv)
    used = {}
    for output in args.outputs:
        if filesystem.exists(join(output, LEASE)):
            print(f"{prog}: a run holds {output} (or died there: rerun it first); nothing was pruned",
                  file=sys.stderr)
            return 2
        try:
            used[output] = used_by(output)
        except (OSError, ValueError) as error:
            print(f"{prog}: {error}; nothing was pruned", file=sys.stderr)
            return 2
    caches = ({args.cache: list(used.values())} if args.cache
              else {join(output, CACHE_DIR): [kept] for output, kept in used.items()})
    for cache, kept in caches.items():
        try:
            counts = outcome_store.OutcomeStore(cache).prune(set().union(*(outcomes for outcomes, _ in kept)),
                                                             set().union(*(digests for _, digests in kept)))
        except RuntimeError as error:
            print(f"{prog}: {error}; {cache} was not pruned", file=sys.stderr)
            return 2
        print(f"{cache}: kept {counts['entries_kept']:,} of {counts['entries']:,} outcomes and "
              f"{counts['digests_kept']:,} digests of {counts['digests']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
