"""Where the cache of outcomes (:mod:`beam_etl.beam.example_cache`) keeps its entries, and the
digests of the local files it has read.

Entries live in segments, ``outcomes/<writer>.seg`` in the cache folder, each written by one
writer (an instance of the per-image step) and never by another, beside their index
``outcomes/<writer>.idx`` (a line ``name offset length`` per entry, written after the entry's
bytes). Locally a writer appends to its segment and flushes each entry, so a run killed at any
moment keeps every entry it finished (a few files per run, not one per input: creating a small
file costs this disk about 200 µs, more than reading the entry back). In an object store, where
nothing is appended, a writer puts a segment and then its index at the end of each bundle (and
each :data:`HELD_BYTES`).

An index line that is cut short is skipped, and an entry that does not match its checksum or its
name (:func:`beam_etl.beam.example_cache.decode`: cut short, overwritten, pointed at by a
damaged line) is computed again and written anew, never copied into the output. This module is
not part of the chain's version: a change in how entries are kept finds the entries already
kept.

To name an entry, a run needs its input files' SHA-256. A writer also records, in
``outcomes/<writer>.dig``, the digest of each local file it read with the file's state
(:mod:`beam_etl.file_states`: size, times, inode, device) once the file has settled, on a
filesystem that vouches for its states; a later run that finds a file in that state takes the
digest and reads the file only if its outcome must be computed.

An entry ends with its examples' bytes (:func:`example_places`): a run makes its shards from
there instead of writing them a second time (:mod:`beam_etl.beam.sink`), so a segment pruned
while a run that uses it goes on fails that run, naming the file.

Each process reads every index and digests file once, then only what was added: about 1.6 KB of
memory per input and version kept. Entries of old versions stay until the cache is pruned
(:meth:`OutcomeStore.prune`, ``beam-etl prune-cache``) or its folder deleted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import threading
import time
import uuid

import google_crc32c

from beam_etl import file_states
from beam_etl.beam import filesystem, lease
from beam_etl.beam.example_cache import Outcome, decode, encode
from beam_etl.output_layout import join

SEGMENTS = "outcomes"  # the folder of segments, in the cache folder
SEGMENT, INDEX, DIGESTS = ".seg", ".idx", ".dig"  # a writer's files: <writer id><suffix>
HELD_BYTES = 32 << 20  # (object stores) a writer puts a segment once it holds this much
PRUNE_LOCK = "prune.lock"  # held by the one prune of the folder at a time

LARGEST_FILE = 1 << 62  # past any segment a writer could have written (a file offset is 63 bits)
_INDEX_LINE = re.compile(r"([0-9a-f]{64}) ([0-9]+) ([0-9]+)")
# A writer's file: its id (32 hex digits) and a suffix. Nothing else in the folder is the
# cache's: it is neither read nor pruned.
_WRITER_FILE = re.compile(r"[0-9a-f]{32}(\.seg|\.idx|\.dig)")


def example_places(location: Location, outcome: Outcome) -> list[tuple[str, int]]:
    """Where each of ``outcome``'s examples' bytes are in its entry at ``location``: an entry
    ends with them, one after the other (:func:`beam_etl.beam.example_cache.encode`)."""
    offset = location.offset + location.length - sum(len(example.serialized) for example in outcome.examples)
    places = []
    for example in outcome.examples:
        places.append((location.segment, offset))
        offset += len(example.serialized)
    return places


def is_writer_file(name: str) -> bool:
    """Whether ``name`` (in the folder of segments) is a file a writer of the cache made."""
    return _WRITER_FILE.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class Location:
    """Where an entry's bytes are: ``length`` bytes at ``offset`` in ``segment`` (a path)."""

    segment: str
    offset: int
    length: int


def read_index(text: str, segment: str) -> list[tuple[str, Location]]:
    """The entries an index file's text names, in its order; a line cut short (a writer killed
    mid-line), or one that reaches past :data:`LARGEST_FILE`, is skipped."""
    entries = []
    for line in text.split("\n")[:-1]:  # (the last piece has no newline: cut short, or empty)
        matched = _INDEX_LINE.fullmatch(line)
        if matched and int(matched[2]) + int(matched[3]) <= LARGEST_FILE:
            entries.append((matched[1], Location(segment, int(matched[2]), int(matched[3]))))
    return entries


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


class _Writer:
    """One writer's files: its segments, their indexes and its digests. Locally one of each,
    appended to and flushed per line or entry; in an object store, one of each per bundle (or
    per :data:`HELD_BYTES`), put by :meth:`finish`, an index after its segment."""

    def __init__(self, folder: str):
        self._folder = folder
        self._local = filesystem.is_local(folder)
        self._files: dict[str, object] = {}  # (local) suffix -> the open file
        self._start()

    def _start(self) -> None:
        self._base = join(self._folder, uuid.uuid4().hex)
        self._held: list[bytes] = []  # (object stores) the entries not put yet
        self._lines: list[str] = []
        self._digest_lines: list[str] = []
        self._offset = 0

    def _file(self, suffix: str):
        """(Local) this writer's file ``suffix``, opened to append on first use."""
        if suffix not in self._files:
            filesystem.make_parent(self._base)
            mode, encoding = ("ab", None) if suffix == SEGMENT else ("a", "utf-8")
            path = filesystem.local_path(self._base + suffix)
            self._files[suffix] = open(path, mode, encoding=encoding)  # pylint: disable=consider-using-with
        return self._files[suffix]

    def write_digest(self, path: str, state: tuple[int, ...], sha256: str) -> None:
        line = digest_line(path, state, sha256)
        if not self._local:
            self._digest_lines.append(line)
            return
        digests = self._file(DIGESTS)
        try:
            digests.write(line)
            digests.flush()
        except OSError as error:
            raise filesystem.named(error, self._base + DIGESTS)  # pylint: disable=raise-missing-from

    def write(self, name: str, data: bytes) -> Location:
        """Appends the entry ``data``; returns where it is (in an object store: where it will
        be once this bundle's :meth:`finish` has put it)."""
        line = f"{name} {self._offset} {len(data)}\n"
        location = Location(self._base + SEGMENT, self._offset, len(data))
        if not self._local:
            self._held.append(data)
            self._lines.append(line)
            self._offset += len(data)
            if self._offset >= HELD_BYTES:
                self.finish()
            return location
        written = SEGMENT
        try:
            segment, index = self._file(SEGMENT), self._file(INDEX)
            segment.write(data)
            segment.flush()  # in the kernel's hands before the line that names it
            written = INDEX
            index.write(line)
            index.flush()
        except BaseException as error:
            failed = self._base + written
            # Where the failed write left the files is not known: new files next. (Closing
            # flushes what the others hold, which may fail the same way: the write's error is the one raised.)
            with contextlib.suppress(OSError):
                self.close()
            self._start()
            if isinstance(error, OSError):
                raise filesystem.named(error, failed)  # pylint: disable=raise-missing-from  # (its cause is set)
            raise
        self._offset += len(data)
        return location

    def finish(self) -> None:
        """(Object stores) puts the held entries' segment, then its index, and the digests."""
        if self._local or not (self._held or self._digest_lines):
            return
        if self._held:
            filesystem.write_bytes(self._base + SEGMENT, b"".join(self._held))
            filesystem.write_bytes(self._base + INDEX, "".join(self._lines).encode("ascii"))
        if self._digest_lines:
            filesystem.write_bytes(self._base + DIGESTS, "".join(self._digest_lines).encode("utf-8"))
        self._start()

    def close(self, sync: bool = False) -> None:
        """Closes the local files, every one (the first error is raised after); ``sync``: on
        disk first, their folder's entries too."""
        files, self._files = self._files, {}
        failed = None
        for suffix, handle in files.items():
            try:
                with filesystem.naming(self._base + suffix):
                    try:
                        if sync:
                            handle.flush()
                            os.fsync(handle.fileno())
                    finally:
                        handle.close()
            except OSError as error:
                failed = failed or error
        if failed is not None:
            raise failed
        if sync and files:
            folder = os.open(filesystem.local_path(self._folder), os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)


class _Known:
    """What this process has read of one cache folder's indexes and digests files: each one's
    part read so far, and the entries and digests they name. Instances of the per-image step
    (Beam's Dask runner sets one up per partition) read only what was added since."""

    def __init__(self, folder: str):
        self._folder = folder
        self._read: dict[str, int] = {}  # file name -> bytes read (whole lines)
        self.entries: dict[str, list[Location]] = {}
        self.digests: dict[str, dict[tuple[int, ...], str]] = {}  # path -> {file_state: sha256}
        self.unreadable: set[str] = set()  # files this user may not read (another's, in a shared cache)
        self.lock = threading.Lock()

    def _new_lines(self, name: str, local: bool) -> bytes:
        if name in self.unreadable:
            return b""
        try:
            return self._read_on(name, local)
        except FileNotFoundError:  # (pruned since it was listed: what it held is gone)
            return b""
        except PermissionError:  # what it names is computed again (launch.check_cache tells the user)
            self.unreadable.add(name)
            return b""

    def _read_on(self, name: str, local: bool) -> bytes:
        path = join(self._folder, name)
        done = self._read.get(name, 0)
        if local:
            size = os.path.getsize(filesystem.local_path(path))
            if size < done:  # (not written by a writer: it only appends) read again
                done = 0
            if size == done:
                return b""
            data = filesystem.read_range(path, done, size - done)
        elif name in self._read:
            return b""  # an object, put whole, once
        else:
            data = filesystem.read_bytes(path)
        whole = data[:data.rfind(b"\n") + 1]  # a line being written is read next time
        self._read[name] = done + (len(whole) if local else len(data))
        return whole

    def refresh(self, names: list[str] | None = None) -> None:
        """Reads what was added to the indexes and digests files ``names`` (default: every one
        in the folder now)."""
        local = filesystem.is_local(self._folder)
        for name in filesystem.list_files(self._folder) if names is None else names:
            if not is_writer_file(name):
                continue
            if name.endswith(INDEX):
                segment = join(self._folder, name[:-len(INDEX)] + SEGMENT)
                text = self._new_lines(name, local).decode("ascii", errors="replace")
                for entry, location in read_index(text, segment):
                    self.entries.setdefault(entry, []).append(location)
            elif name.endswith(DIGESTS):
                text = self._new_lines(name, local).decode("utf-8", errors="replace")
                for path, state, sha256 in read_digests(text):
                    self.digests.setdefault(path, {})[state] = sha256


_KNOWN: dict[str, _Known] = {}
_KNOWN_LOCK = threading.Lock()


def _known(folder: str) -> _Known:
    with _KNOWN_LOCK:
        if folder not in _KNOWN:
            _KNOWN[folder] = _Known(folder)
        return _KNOWN[folder]


class OutcomeStore:
    """The outcomes, and the digests of local files, under ``directory/outcomes`` (local or
    ``gs://``). The indexes and digests are read at the first lookup (only what this process has
    not read of them yet): an entry written later, this instance's own among them, may not be
    found (a run looks each input up once; a retried bundle computes its inputs again)."""

    def __init__(self, directory: str):
        self._folder = join(directory, SEGMENTS)
        self._known: _Known | None = None
        self._writer: _Writer | None = None
        self._read_only: bool | None = None  # (a local cache this user may not write to: read only)

    def exists(self) -> bool:
        """Whether the folder of segments is there (a local folder; in an object store, a file in it)."""
        if filesystem.is_local(self._folder):
            return os.path.isdir(filesystem.local_path(self._folder))
        return bool(filesystem.list_files(self._folder, limit=1))

    def refusal(self) -> str | None:
        """(A local cache) why this user could not write outcomes to it, or None
        (:func:`beam_etl.beam.filesystem.write_refusal` of the folder of segments)."""
        return filesystem.write_refusal(self._folder)

    def unreadable(self) -> list[str]:
        """(A local cache) the writers' files in it that this user may not read (another
        user's, in a shared cache): what they hold is passed over, and computed again."""
        if not filesystem.is_local(self._folder) or not self.exists():
            return []
        folder = filesystem.local_path(self._folder)
        return [name for name in sorted(os.listdir(folder))
                if is_writer_file(name) and not filesystem.may(os.path.join(folder, name), os.R_OK)]

    def _own_writer(self) -> _Writer:
        if self._writer is None:
            self._writer = _Writer(self._folder)
        return self._writer

    def _refreshed(self) -> _Known:
        known = _known(self._folder)
        with known.lock:
            known.refresh()
        return known

    def _read_known(self) -> _Known:
        """What this process knows of the folder, refreshed at this instance's first lookup."""
        if self._known is None:
            self._known = self._refreshed()
        return self._known

    def known_digest(self, path: str, state: tuple[int, ...]) -> str | None:
        """The SHA-256 recorded for the local file ``path`` in ``state``
        (:func:`beam_etl.file_states.file_state`), or None: a file whose state is not the
        recorded one is read and hashed again."""
        return self._read_known().digests.get(path, {}).get(state)

    def record_digest(self, path: str, states, sha256: str) -> bool:
        """Records the SHA-256 of the bytes read from the local file ``path``, if its
        ``states`` around the read (``stat`` of the path before, ``fstat`` of the open file as
        the read began and ended) are one, and the file had settled on a filesystem that
        vouches for its states (:mod:`beam_etl.file_states`); whether it did."""
        state = states[0]
        if any(other != state for other in states) or not file_states.trusted(state[4]) \
                or not file_states.settled(max(state[1], state[2]), time.time_ns()):
            return False
        if self.read_only():
            return False
        self._own_writer().write_digest(path, state, sha256)
        return True

    def read_only(self) -> bool:
        """Whether this user may only read the cache (:meth:`refusal`): what it holds is used,
        and nothing is written to it."""
        if self._read_only is None:
            self._read_only = self.refusal() is not None
        return self._read_only

    def entries(self) -> dict[str, list[Location]]:
        """Every entry the indexes name now, by name: each place one was written."""
        known = self._refreshed()
        with known.lock:
            return {name: list(locations) for name, locations in known.entries.items()}

    def digests(self) -> dict[str, dict[tuple[int, ...], str]]:
        """Every digest recorded now, by path: ``{file_state: sha256}``."""
        known = self._refreshed()
        with known.lock:
            return {path: dict(states) for path, states in known.digests.items()}

    def read(self, name: str) -> tuple[Outcome | None, bool]:
        """``(outcome, damaged)``: the entry's outcome, or None when there is none (damaged:
        there is one, but not one intact). A segment that is gone holds none; any other read
        error is raised (the runner retries the bundle)."""
        return self.read_located(name)[:2]

    def read_located(self, name: str) -> tuple[Outcome | None, bool, Location | None]:
        """:meth:`read`, and where the intact entry it read is."""
        damaged = False
        for location in list(self._read_known().entries.get(name, ())):
            try:
                data = filesystem.read_range(location.segment, location.offset, location.length)
            except (FileNotFoundError, PermissionError):  # (pruned; another user's)
                continue
            outcome = decode(name, data)
            if outcome is not None:
                return outcome, False, location
            damaged = True
        return None, damaged, None

    def write(self, name: str, outcome: Outcome) -> Location | None:
        """Keeps the outcome; returns where its entry is, or None where nothing is kept (a cache
        this user may only read)."""
        if self.read_only():
            return None
        return self._own_writer().write(name, encode(name, outcome))

    def prune(self, keep: set[str], keep_digests: set[str]) -> dict:
        """Keeps one intact copy of each entry named in ``keep``, and each digest whose SHA-256
        is in ``keep_digests``, written anew by one writer; then deletes the files that were in
        the folder before (only those: a writer's files made meanwhile stay, with what they
        hold). Files this user may not read or delete (another user's, in a shared cache) are
        left as they are, a segment with its index. Returns the counts, before and kept, and
        the files ``left``. One prune at a time: raises RuntimeError while another holds the
        folder's :data:`PRUNE_LOCK`, or where this user may not write (:meth:`refusal`)."""
        refusal = self.refusal()
        if refusal is not None:
            raise RuntimeError(f"cannot write to the cache {self._folder}: {refusal}")
        lock = join(self._folder, PRUNE_LOCK)
        holder = lease.take_lock(lock)  # (a killed prune's is broken: its process is gone)
        if holder is None:
            raise RuntimeError(f"another prune of {self._folder} runs ({lock})")
        try:
            return self._prune(keep, keep_digests)
        finally:
            lease.release_lock(lock, holder)

    def _prune(self, keep: set[str], keep_digests: set[str]) -> dict:
        names = [name for name in filesystem.list_files(self._folder) if is_writer_file(name)]
        known = _Known(self._folder)  # (not this process's view: only the files listed)
        known.refresh(names)
        writer = _Writer(self._folder)
        kept = 0
        unreadable = set(known.unreadable)  # (another user's, in a shared cache: left as they are)
        if filesystem.is_local(self._folder):  # (a segment none of whose entries is kept, too)
            folder = filesystem.local_path(self._folder)
            unreadable |= {name for name in names if not filesystem.may(os.path.join(folder, name), os.R_OK)}
        for name in sorted(keep & known.entries.keys()):
            for location in known.entries[name]:
                try:
                    data = filesystem.read_range(location.segment, location.offset, location.length)
                except FileNotFoundError:
                    continue
                except PermissionError:
                    unreadable.add(location.segment.rsplit("/", 1)[-1])
                    continue
                if decode(name, data) is not None:
                    writer.write(name, data)
                    kept += 1
                    break
        digests = [(path, state, sha256) for path, states in known.digests.items()
                   for state, sha256 in states.items()]
        for path, state, sha256 in digests:
            if sha256 in keep_digests:
                writer.write_digest(path, state, sha256)
        writer.finish()
        writer.close(sync=True)  # (kept on disk before the old copies are deleted)
        # A segment and its index stay together: one of them unreadable, both are left.
        left = {name[:-len(suffix)] for name in unreadable for suffix in (SEGMENT, INDEX) if name.endswith(suffix)}
        left = unreadable | {base + suffix for base in left for suffix in (SEGMENT, INDEX)}
        for suffix in (INDEX, DIGESTS, SEGMENT):  # (an index before its segment)
            for name in names:
                if name.endswith(suffix) and name not in left:
                    try:
                        filesystem.delete_file(join(self._folder, name))
                    except PermissionError:  # (another user's, in a folder only owners delete from)
                        left.add(name)
        with _KNOWN_LOCK:
            _KNOWN.pop(self._folder, None)  # what this process had read is gone
        return {"entries": len(known.entries), "entries_kept": kept, "digests": len(digests),
                "digests_kept": sum(1 for *_, sha256 in digests if sha256 in keep_digests),
                "left": sorted(left & set(names))}

    def finish_bundle(self) -> None:
        """At a bundle's end: in an object store, what the bundle wrote is put now."""
        if self._writer is not None:
            self._writer.finish()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
