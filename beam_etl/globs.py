"""The literal parts of a FileSystems pattern (Beam's ``*``, ``**``, ``?`` and ``[...]``): a path
escaped to match only itself, and the folder a pattern's matches all lie under.

A path joined into a pattern (an Oxford root, the working folder before a relative glob) keeps
its glob characters literal by :func:`escape_glob`: ``a[1]`` -> ``a[[]1]``. The readers of a
pattern's literal start (where a listing begins, what a source's folder is) read those escapes as
the characters they stand for, so that such a folder is no wildcard and what lies beside it is
not listed.

Standard library only: the launch's up-to-date check reads patterns before Beam loads.
"""

from __future__ import annotations

import posixpath
import re

GLOB_CHARACTERS = "*?["
_ESCAPED = re.compile(r"\[([*?\[])\]")  # what escape_glob writes: one glob character in a class


def escape_glob(path: str) -> str:
    """``path`` as a FileSystems pattern that matches only itself: ``a[1]`` -> ``a[[]1]``."""
    return "".join(f"[{c}]" if c in GLOB_CHARACTERS else c for c in path)


def _literal_end(pattern: str) -> int:
    """Where ``pattern``'s first wildcard starts (its length, with none); escapes are literal."""
    index = 0
    while index < len(pattern):
        escaped = _ESCAPED.match(pattern, index)
        if escaped:
            index = escaped.end()
        elif pattern[index] in GLOB_CHARACTERS:
            return index
        else:
            index += 1
    return index


def unescape(pattern: str) -> str:
    """The path that a pattern with no wildcard names: :func:`escape_glob` undone."""
    return _ESCAPED.sub(r"\1", pattern)


def literal_start(pattern: str) -> tuple[str | None, str]:
    """``(folder, tail)``: the folder before the component that holds ``pattern``'s first wildcard,
    as a path (``""`` for a pattern that starts with one), and the pattern after that folder and
    its ``/``; ``(None, pattern)`` where it has no wildcard."""
    end = _literal_end(pattern)
    if end == len(pattern):
        return None, pattern
    cut = pattern.rfind("/", 0, end)
    return unescape(pattern[:max(cut, 0)]) if cut != 0 else "/", pattern[cut + 1:]


def root(pattern: str) -> str:
    """The folder every match of ``pattern`` (a path or a ``scheme://`` uri) lies under, as a path:
    the folder before the component that holds its first wildcard, or, with none, the folder of
    the path it names (``DIR/`` names the files in ``DIR``, as in Beam)."""
    pattern = pattern + "*" if pattern.endswith("/") else pattern
    folder, _ = literal_start(pattern)
    return posixpath.dirname(unescape(pattern)) if folder is None else folder
