"""Where a command that reads an output may write its one file (the loader's ``--preview``, the
report's ``--html``): checked before anything is read, so that a wrong flag fails at once,
naming flag and value, and never inside the output, whose manifest lists exactly its files (a
file written there, or through a link into it, would be one more, or would replace one of them)."""

from __future__ import annotations

import os

from beam_etl.output_layout import is_local, is_within, local_path


def refusal(flag: str, path: str, output: str, suffix: str | None = None) -> str | None:
    """Why ``path`` (given as ``flag``) cannot be written beside ``output``, or None: a name
    without ``suffix`` (when one is asked for), a place inside ``output`` (links resolved), or
    locally a folder that is missing or this user may not write to, or a folder by that name."""
    shown = f"{flag} {path!r}"
    if suffix is not None and not path.lower().endswith(suffix):
        return f"{shown}: expected a {suffix} file"
    if not path:
        return f"{shown}: must name a file"
    if is_within(path, output):
        return f"{shown} is inside OUT ({output!r}), whose manifest lists exactly its files: write it elsewhere"
    if not is_local(path):
        return None
    path = local_path(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{shown}: folder {folder!r} does not exist"
    if os.path.isdir(path):
        return f"{shown} is a folder"
    if not os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        return f"{shown}: this user may not write to {folder!r}"
    return None
