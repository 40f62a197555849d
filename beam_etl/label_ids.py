"""How the transform graph's ``label`` ids moved between two versions of an output.

A label id is the class name's place in the training split's vocabulary, ordered as tf.Transform's
``tft.vocabulary`` orders it (most frequent first): a version with other class counts can move
them all, and a model trained on one version's ids reads another's wrongly. The records'
``image/class/label`` is the source's own id and never moves. ``beam-etl diff`` and the job's
summary, when it replaces an output, say which moved. Manifests only: no Beam, no TensorFlow.
"""

from __future__ import annotations

NOTE = "a label id is the class name's place in the training split's vocabulary, most frequent first"


def moved(old_manifest: dict, new_manifest: dict, limit: int = 8) -> str | None:
    """``"b 1 -> 0, a 0 -> 1, c -1 -> 2"``: each class name whose id differs from
    ``old_manifest`` 's to ``new_manifest`` 's, by its new id, then those gone (-1: not in the
    vocabulary); None where none moved or either has no statistics."""
    old = (old_manifest.get("statistics") or {}).get("class_names")
    new = (new_manifest.get("statistics") or {}).get("class_names")
    if not isinstance(old, list) or not isinstance(new, list) or old == new:
        return None
    old_ids, new_ids = {name: i for i, name in enumerate(old)}, {name: i for i, name in enumerate(new)}
    names = [*new, *(name for name in old if name not in new_ids)]
    changed = [f"{name} {old_ids.get(name, -1)} -> {new_ids.get(name, -1)}" for name in names
               if old_ids.get(name, -1) != new_ids.get(name, -1)]
    if not changed:
        return None
    return ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more" if len(changed) > limit else "")
