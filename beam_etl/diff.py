"""What changed between two outputs of the job, from their lineage indexes: inputs added, removed
(gone from the sources, or rejected now) and changed (other records: other bytes, metadata or
split, or flags or code that shape their examples differently).

    python -m beam_etl.diff OLD NEW            # counts, then one "+ key", "- key" or "~ key" line each
                                               # (a key with a character that does not print: JSON-quoted)
    python -m beam_etl.diff OLD NEW --counts   # the counts only

Exit status 0 when no example changed, 1 when one did, 2 when either is not a complete output
with a lineage index. Notes say why (flags, code) and which of the transform graph's label ids and
mask class ids moved (:mod:`beam_etl.label_ids`): a move changes no example's records, so alone it
leaves the exit status 0. Reads local folders directly, others (``gs://``) through TensorFlow's
file systems.
"""

from __future__ import annotations

import json
import sys

from beam_etl import label_ids, lineage
from beam_etl.config import FlagParser, flag_type, output_folder

_MARKS = {lineage.ADDED: "+", lineage.REMOVED: "-", lineage.CHANGED: "~"}


def compare(old: str, new: str) -> tuple[lineage.Changes, list[str]]:
    """What changed from the output ``old`` to ``new``, and notes on why (flags, code) and on the
    transform graph's ids that moved."""
    old_manifest, old_index = lineage.read_output(old)
    new_manifest, new_index = lineage.read_output(new)
    notes = []
    old_lineage, new_lineage = old_manifest["lineage"], new_manifest["lineage"]
    if old_lineage["chain_version"] != new_lineage["chain_version"]:
        # (an output written before the manifest named them has no chain_libraries: "?")
        old_libraries = old_lineage.get("chain_libraries") or {}
        new_libraries = new_lineage.get("chain_libraries") or {}
        libraries = [f"{name} {old_libraries.get(name, '?')} -> {new_libraries.get(name, '?')}"
                     for name in sorted(set(old_libraries) | set(new_libraries))
                     if old_libraries.get(name) != new_libraries.get(name)]
        if old_lineage["chain_code"] != new_lineage["chain_code"]:
            notes.append("the per-image code differs: every example is made anew")
        elif libraries:
            notes.append(f"the per-image chain's libraries differ ({', '.join(libraries)}): every example is made anew")
        else:
            notes.append("the flags that shape examples differ: the examples they shape are made anew")
    for what, moved, note in label_ids.moves(old_manifest, new_manifest):
        notes.append(f"the transform graph's {what} differ: {moved} ({note})")
    return lineage.compare(old_index, new_index), notes


def shown_key(key: str) -> str:
    """``key`` as one line shows it: as it is when every character prints, else JSON-quoted (a
    line break or a tab in a file name must not pass for another key's line)."""
    return key if key.isprintable() else json.dumps(key)


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.diff") -> int:
    parser = FlagParser(prog=prog, description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("old", metavar="OLD", type=flag_type(output_folder),
                        help="The earlier output folder (local or gs://).")
    parser.add_argument("new", metavar="NEW", type=flag_type(output_folder),
                        help="The later output folder (local or gs://).")
    parser.add_argument("--counts", action="store_true", help="Print the counts only, not the keys.")
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's native logs.")
    args = parser.parse_args(argv)
    try:
        changes, notes = compare(args.old, args.new)
    except (OSError, ValueError, KeyError, TypeError) as error:  # (a manifest edited by hand)
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = changes.counts()
    print(f"{args.old} -> {args.new}: " + ", ".join(f"{count} {what}" for what, count in counts.items()))
    for note in notes:
        print(f"note: {note}")
    if not args.counts:
        for key, change in changes.keyed():
            print(f"{_MARKS[change]} {shown_key(key)}")
    return 1 if changes.added or changes.removed or changes.changed else 0


if __name__ == "__main__":
    from beam_etl import unread_streams  # (a message nobody reads, `python -m ... | head`, fails nothing)

    unread_streams.ignore_gone_readers()
    sys.exit(main())
