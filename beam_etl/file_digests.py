"""The digests files of the cache of outcomes (:mod:`beam_etl.beam.outcome_store`): the SHA-256
of each local file a run read, with the file's state (:mod:`beam_etl.file_states`) as it was
read. A line each, behind its own crc32c: a line cut short or damaged is no digest.

No Beam: the up-to-date check (:mod:`beam_etl.beam.up_to_date`) reads them before Beam loads.
"""

from __future__ import annotations

import json
import os

import google_crc32c

SEGMENTS = "outcomes"  # the folder of a cache's segments and digests files, in the cache folder
DIGESTS = ".dig"  # a writer's digests file: <writer id>.dig


def _line_checksum(body: str) -> str:
    return f"{google_crc32c.value(body.encode('utf-8', 'surrogatepass')):08x}"


def digest_line(path: str, state: tuple[int, ...], sha256: str) -> str:
    """A digests file's line: ``sha256 size mtime_ns ctime_ns inode device "path" crc32c``."""
    body = f"{sha256} {' '.join(map(str, state))} {json.dumps(path)}"
    return f"{body} {_line_checksum(body)}\n"


def read_digests(text: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(path, file_state, sha256)`` of each whole line of a digests file whose checksum holds."""
    digests = []
    for line in text.split("\n")[:-1]:
        body, _, checksum = line.rpartition(" ")
        if checksum != _line_checksum(body):
            continue
        fields = body.split(" ", 6)
        if len(fields) != 7 or len(fields[0]) != 64 or len(fields[6]) < 2 or fields[6][0] != '"':
            continue
        quoted = fields[6]
        try:
            # (json.dumps escapes every quote, backslash, control and non-ASCII character: a
            # path written without a backslash is its own text)
            path = quoted[1:-1] if "\\" not in quoted else json.loads(quoted)
            state = tuple(map(int, fields[1:6]))
        except ValueError:
            continue
        if isinstance(path, str):
            digests.append((path, state, fields[0]))
    return digests


def recorded(cache: str) -> dict[str, dict[tuple[int, ...], str]]:
    """Every digest the local cache folder ``cache`` holds, by path: ``{file_state: sha256}``."""
    folder = os.path.join(cache, SEGMENTS)
    digests: dict[str, dict[tuple[int, ...], str]] = {}
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(DIGESTS))
    except OSError:
        return digests
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as file:
                text = file.read().decode("utf-8", errors="replace")  # (as the store reads it)
        except OSError:
            continue
        for path, state, sha256 in read_digests(text):
            digests.setdefault(path, {})[state] = sha256
    return digests
