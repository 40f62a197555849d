"""How the transform graph's ids moved between two versions of an output: its ``label`` ids and
its ``mask`` class ids.

A label id is the class name's place in the training split's vocabulary, ordered as tf.Transform's
``tft.vocabulary`` orders it (most frequent first): a version with other class counts can move
them all, and a model trained on one version's ids reads another's wrongly. The records'
``image/class/label`` is the source's own id and never moves. A mask class id is the mask value's
place in the statistics' ``class_values`` (``--mask_values``, or the values the training split
holds): one value more or less moves the ids of the values above it, in every record's mask
however unchanged its bytes. ``beam-etl diff`` and the job's summary, when it replaces an output,
say which moved. Manifests only: no Beam, no TensorFlow.
"""

from __future__ import annotations

NOTE = "a label id is the class name's place in the training split's vocabulary, most frequent first"
MASK_NOTE = "a mask value's class id is its place in statistics.class_values, -1 where it has none"

# (what the ids are called, the statistics' list whose places they are, how an entry of it is
# named, what an id is)
_IDS = (("label ids", "class_names", str, NOTE),
        ("mask class ids", "class_values", "value {}".format, MASK_NOTE))


def moved(old_manifest: dict, new_manifest: dict, limit: int = 8, statistic: str = "class_names",
          named=str) -> str | None:
    """``"b 1 -> 0, a 0 -> 1, c -1 -> 2"``: each entry of the statistics' ``statistic`` list
    (``named`` names it) whose place differs from ``old_manifest`` 's to ``new_manifest`` 's, by
    its new place, then those gone (-1: not in the list); None where none moved or either has no
    statistics."""
    old = (old_manifest.get("statistics") or {}).get(statistic)
    new = (new_manifest.get("statistics") or {}).get(statistic)
    if not isinstance(old, list) or not isinstance(new, list) or old == new:
        return None
    old_ids, new_ids = {name: i for i, name in enumerate(old)}, {name: i for i, name in enumerate(new)}
    names = [*new, *(name for name in old if name not in new_ids)]
    changed = [f"{named(name)} {old_ids.get(name, -1)} -> {new_ids.get(name, -1)}" for name in names
               if old_ids.get(name, -1) != new_ids.get(name, -1)]
    if not changed:
        return None
    return ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more" if len(changed) > limit else "")


def moves(old_manifest: dict, new_manifest: dict) -> list[tuple[str, str, str]]:
    """``(what, moved, note)`` for each kind of the graph's ids that moved from ``old_manifest`` 's
    to ``new_manifest`` 's: ``("label ids", "b 1 -> 0, a 0 -> 1", NOTE)``, then ``("mask class
    ids", "value 0 -1 -> 0, value 1 0 -> 1", MASK_NOTE)`` (see :func:`moved`)."""
    return [(what, ids, note) for what, statistic, named, note in _IDS
            if (ids := moved(old_manifest, new_manifest, statistic=statistic, named=named))]
