"""Whether ``--output`` already holds what its command would make, told before Beam loads.

A rerun of the command that made an output, with ``--overwrite`` and nothing changed, would
write the same files again (the cache of outcomes makes them the same bytes). This module
answers that rerun at once, as ``make`` or DVC answer an up-to-date target: a local run that
ends writes, beside its output, :data:`~beam_etl.output_layout.UP_TO_DATE` (``OUT/.beam-etl-up-to-date.json``): its command
line (but ``--overwrite``), working directory and ``BEAM_ETL_*`` environment, a digest of the
code that ran (the job's own sources, the Python and the installed distributions), and digests
of two snapshots: the source folders' tree, taken before the run read a byte, and the output's
tree once committed. A snapshot is the ``lstat`` of every file and folder under those folders:
type, size, modification and change times in nanoseconds, inode, device.

The rerun (:func:`check`) takes the same snapshots again and leaves the output as it is only
when everything matches; anything else (a file added, removed or renamed; a flag; the code; a
``.incomplete/`` of another run) runs the job, which decodes only what its cache has not seen.
A file whose ``lstat`` alone changed (touched, copied over with the same bytes, rewritten even
with its old size and modification time put back, which moves its change time) is read and
hashed (``OUT/.beam-etl-up-to-date.json.files`` keeps each entry's state): where its SHA-256
is the one the output's lineage index says its input was made from, the output is still up to
date, and the state is taken anew (once the file has settled). The lineage index, not the
snapshot, is what the run read: a file changed while the run went on and put back after it is
found (so is a link retargeted and set back, and every file of a folder whose own state
changed is hashed: one swapped and put back). A file no written input was made from (an
Oxford list, a rejected input's) runs the job.
A state is written only when every source is a local folder (links to files are followed; a
link to a folder under it leaves no state), the sources and the output lie on filesystems whose
times vouch for their files (:func:`beam_etl.file_states.trusted`: not NFS, FUSE or squashfs),
and no input changed in the :data:`beam_etl.file_states.SETTLE_SECONDS` before the snapshot: a
file rewritten twice within one tick of the file system's clock, around the snapshot, would
keep its times (git's "racily clean" entries), so a run over inputs that were just written
leaves no state, and the next rerun runs the job. ``--no_cache`` runs the job whatever the state
says; so does a command that asks for more than the output (``--render_graph``, ``--help``).

Standard library only: :func:`check` runs before Beam (or TensorFlow) is imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import stat
import sys
import time

from beam_etl import code_version, file_states, globs, regular_files
from beam_etl.processes import is_running
from beam_etl.output_layout import CACHE_DIR, INCOMPLETE_DIR, MANIFEST, UP_TO_DATE, UP_TO_DATE_FILES, parse_manifest

FORMAT = 2
_ENV_PREFIX = "BEAM_ETL_"
# The tests' crash hook (beam_etl.beam.crash): it decides where a run stops, never what it makes; a
# run interrupted after its commit records its state, which its command without the hook finds.
_NOT_RECORDED_ENV = ("BEAM_ETL_CRASH_AT",)
_NOT_COMPARED = ("--overwrite",)  # the rerun names it; the run that made the output may not have
_PACKAGES = ("beam_etl", "pipelines", "beam_dask")  # the code that makes an output
# Flags that ask for more than the output (a file elsewhere, the usage): a command with one is
# never answered from the state, so it does what it asks (and its flags are checked).
_BEYOND_THE_OUTPUT = ("--render_graph", "--help", "-h")


def _option(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``; the last one given)."""
    value = None
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value


def local_path(path: str) -> str | None:
    """``path`` made absolute; None for one that is not on this machine (``gs://``)."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    elif "://" in path:
        return None
    if ".." in path.split("/"):  # the OS resolves it after any link, os.path.abspath before
        return None
    return os.path.abspath(path)


def root_of(pattern: str) -> str | None:
    """The folder a glob's matches all lie under: its components before the first with a
    wildcard (None for a path that is not local)."""
    path = local_path(pattern)
    if path is None:
        return None
    return globs.root(path + "/" if pattern.endswith("/") else path)  # (os.path.abspath drops a final "/")


def _line(name: str, st: os.stat_result, times: bool = True) -> bytes:
    when = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}" if times else ""
    return f"{name}\0{stat.S_IFMT(st.st_mode)}\0{when}\0{st.st_ino}\0{st.st_dev}\n".encode("utf-8", "surrogateescape")


def _entry(st: os.stat_result) -> list:
    """What ``UP_TO_DATE_FILES`` keeps of an entry: its kind and state (a link's, then its target's)."""
    kind = {stat.S_IFREG: "file", stat.S_IFDIR: "folder", stat.S_IFLNK: "link"}.get(stat.S_IFMT(st.st_mode), "other")
    return [kind, *file_states.file_state(st)]


def tree_digest(root: str, *, skip: tuple[str, ...] = (), links_allowed: bool = False,
                newest: list | None = None, kept: dict | None = None) -> str | None:
    """SHA-256 of the ``lstat`` of ``root`` (and, for a link, of what it points to) and of every
    entry under it, in name order, leaving out the top-level names in ``skip`` (and names that
    start with one and a dot). Unless ``links_allowed``, a symbolic link to a file adds what
    it points to (a file elsewhere can change without a trace here), and one to a folder makes
    the answer None, as a missing ``root`` does.
    ``newest``, a one-item list, gets the latest modification or change time seen, in
    nanoseconds; ``kept``, a dict, gets each entry's :func:`_entry` by name."""
    digest = hashlib.sha256()
    try:
        top = os.lstat(root)
        if not file_states.trusted(top.st_dev):
            return None
        # Not the root's times: its entries say what they would (and the state is written in it).
        digest.update(_line(".", top, times=False))
        if stat.S_ISLNK(top.st_mode):
            digest.update(_line("->", os.stat(root), times=False))
    except OSError:
        return None
    latest = 0
    pending = [("", root)]
    while pending:
        relative, folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return None
        for entry in entries:
            name = f"{relative}{entry.name}"
            if not relative and any(entry.name == s or entry.name.startswith(s + ".") for s in skip):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone meanwhile: the folder is changing
                return None
            if not file_states.trusted(st.st_dev):
                return None  # (a filesystem whose times do not vouch for a file's bytes)
            digest.update(_line(name, st))
            latest = max(latest, st.st_mtime_ns, st.st_ctime_ns)
            if kept is not None:
                kept[name] = _entry(st)
            if stat.S_ISLNK(st.st_mode) and not links_allowed:
                try:
                    target = os.stat(entry.path)
                except OSError as error:  # a broken link (what it points to may appear), a loop
                    digest.update(f"{name}\0->\0missing\0{error.errno}\n".encode("utf-8", "surrogateescape"))
                    if kept is not None:
                        kept[name] = ["broken link", *file_states.file_state(st), error.errno]
                    continue
                if stat.S_ISDIR(target.st_mode) or not file_states.trusted(target.st_dev):
                    return None
                digest.update(_line(f"{name}\0->", target))
                latest = max(latest, target.st_mtime_ns, target.st_ctime_ns)
                if kept is not None:
                    kept[name].extend(file_states.file_state(target))
            if stat.S_ISDIR(st.st_mode):
                pending.append((name + "/", entry.path))
    if newest is not None:
        newest[0] = max(newest[0], latest)
    return digest.hexdigest()


def _package_files(package: str) -> list[str]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    files = []
    for location in spec.submodule_search_locations:
        for folder, folders, names in os.walk(location):
            folders[:] = sorted(f for f in folders if f != "__pycache__")
            files.extend(os.path.join(folder, name) for name in sorted(names) if name.endswith(".py"))
    return files


# Names in a folder of sys.path that an import can find, or that say what is installed there.
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".pth", ".dist-info", ".egg-info", ".egg-link", ".egg")


def _importable_names(folder: str) -> list[str]:
    """The modules, packages (folders with an ``__init__.py``) and distributions' records in
    ``folder``; a namespace package (a folder without one) is not told from any folder."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(entry.name for entry in entries
                  if entry.name.endswith(_MODULE_SUFFIXES)
                  or (entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py"))))


def source_digests() -> dict[str, bytes]:
    """``{path: SHA-256}`` of the source of the job's packages."""
    digests = {}
    for package in _PACKAGES:
        for path in _package_files(package):
            with open(path, "rb") as source:
                digests[path] = hashlib.sha256(source.read()).digest()
    return digests


def code_digest(sources: dict[str, bytes] | None = None) -> str:
    """SHA-256 of the Python that runs, where it finds modules (``sys.path``, so ``PYTHONPATH``
    too) and which modules and distributions each of those folders holds, and the source of the
    job's packages (``sources``: their :func:`source_digests`, default now). A library edited in
    place, under the same name and version, is not seen."""
    digest = hashlib.sha256(f"{sys.version}\0{sys.prefix}\n".encode())
    for folder in sys.path:
        names = _importable_names(folder or os.getcwd())
        digest.update(f"{folder}\0{names}\n".encode("utf-8", "surrogateescape"))
    for path, source in (source_digests() if sources is None else sources).items():
        digest.update(f"{path}\0".encode("utf-8", "surrogateescape") + source)
    return digest.hexdigest()


def command_line(argv: list[str]) -> dict:
    """What the state records of a command: ``argv`` (but ``--overwrite``), the working folder
    and the ``BEAM_ETL_*`` environment (but the crash hook), taken as the command starts (the job
    sets some of its own later)."""
    return {"argv": [arg for arg in argv if arg not in _NOT_COMPARED], "cwd": os.getcwd(),
            "environ": {k: v for k, v in sorted(os.environ.items())
                        if k.startswith(_ENV_PREFIX) and k not in _NOT_RECORDED_ENV}}


def _checksum(state: dict) -> str:
    body = {k: v for k, v in state.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _inputs_digest(roots: list[str], newest: list | None = None, files: dict | None = None) -> str | None:
    digest = hashlib.sha256()
    for root in roots:
        tree = tree_digest(root, newest=newest, kept=None if files is None else files.setdefault(root, {}))
        if tree is None:
            return None
        digest.update(f"{root}\0{tree}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


# The snapshot of the source folders the last check took: (roots, taken at, digest, newest change
# time, {root: {name: entry}}). The run that check let go ahead records it (it was taken before
# the run read a byte) instead of walking the folders again; each check forgets the one before.
_checked: tuple | None = None


def _take_inputs(roots: list[str]) -> tuple:
    started, newest, files = time.time_ns(), [0], {}
    return tuple(roots), started, _inputs_digest(roots, newest, files), newest[0], files


def _read_files(output: str, sha256: str) -> dict | None:
    """The ``UP_TO_DATE_FILES`` beside ``output`` (``{root: {name: entry}}``), if it is the one its
    state names."""
    try:
        data = regular_files.read(os.path.join(output, UP_TO_DATE_FILES))  # (a FIFO: refused, never waited on)
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        files = json.loads(data.decode("utf-8", "surrogateescape"))
    except ValueError:
        return None
    return files if isinstance(files, dict) else None


def _made_from(output: str) -> dict[str, str | None]:
    """``{uri: SHA-256}`` of the files the output's written inputs were made from, as its lineage
    index says (None for a file read twice with other bytes); empty where it has none."""
    from beam_etl import lineage  # pylint: disable=import-outside-toplevel  # (and its crc32c: only here)

    try:
        _, index = lineage.read_output(output)
    except (OSError, ValueError, KeyError, TypeError):  # (no manifest, no lineage index: none to compare)
        return {}
    made: dict[str, str | None] = {}
    for entry in index.values():
        for uri, sha256 in ((entry.get("image_uri"), entry["image_sha256"]),
                            (entry.get("mask_uri"), entry["mask_sha256"])):
            if isinstance(uri, str):
                made[uri] = sha256 if made.get(uri, sha256) == sha256 else None
    return made


def _hashed_now(path: str, state: tuple[int, ...]) -> str | None:
    """The SHA-256 of the bytes of the local regular file at ``path`` in ``state`` (the
    snapshot's), where it held still in that state while it was read; else None. Opened without
    waiting: a FIFO put there would wait for a writer."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        began = os.fstat(handle.fileno())
        if not stat.S_ISREG(began.st_mode) or file_states.file_state(began) != state:
            return None
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return digest if file_states.file_state(os.fstat(handle.fileno())) == state else None


def _same_contents(state: dict, output: str, now: dict) -> bool:
    """Whether the source folders as they are ``now`` ({root: {name: entry}}) hold the files the
    output was made from: the same names and kinds as in the state's snapshot, and each file
    whose state changed holding the bytes the output's lineage index says its input was made
    from (a file no written input was made from, an Oxford list, a rejected input's: no)."""
    then = _read_files(output, state.get("files", ""))
    if then is None or then.keys() != now.keys():
        return False
    changed = []  # (path, state now) of each file to hash
    for root, entries in now.items():
        if not isinstance(then[root], dict) or entries.keys() != then[root].keys():
            return False
        moved = {name + "/" for name, entry in entries.items()  # (a folder swapped and put back moves its files)
                 if entry[0] == "folder" and entry != then[root][name]}
        for name, entry in entries.items():
            old = then[root][name]
            if entry[0] != old[0] or entry[0] not in ("file", "link", "folder"):
                if entry != old:
                    return False
                continue
            if entry[0] != "folder" and (entry != old or any(name.startswith(folder) for folder in moved)):
                changed.append((os.path.join(root, name), tuple(entry[-5:])))
    made = _made_from(output) if changed else {}
    if any(made.get(path) is None for path, _ in changed):
        return False
    return all(_hashed_now(path, now_state) == made[path] for path, now_state in changed)


def _output_digest(output: str) -> str | None:
    """None while a run holds the output (or a dead one left its lease)."""
    if os.path.lexists(os.path.join(output, INCOMPLETE_DIR)):
        return None
    return tree_digest(output, skip=(UP_TO_DATE, CACHE_DIR), links_allowed=True)


def _manifest(output: str) -> dict | None:
    path = os.path.join(output, MANIFEST)
    try:
        return parse_manifest(regular_files.read(path), path)
    except (OSError, ValueError):
        return None


def read_state(output: str) -> dict | None:
    """The state beside ``output``, or None (none, unreadable, or not matching its checksum)."""
    try:
        state = json.loads(regular_files.read(os.path.join(output, UP_TO_DATE)))  # (a FIFO: refused, not waited on)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("checksum") != _checksum(state):
        return None
    return state


def check(argv: list[str], code: str | None = None) -> dict | None:
    """The manifest of ``--output`` when ``argv`` asks to replace it (``--overwrite``) and it is
    already what ``argv`` would make (see the module's docstring); otherwise None. ``code``: the
    job's :func:`code_digest`, taken as the command started (default: now)."""
    global _checked  # pylint: disable=global-statement
    _checked = None
    output = _option(argv, "--output")
    output = local_path(output) if output else None
    if "--overwrite" not in argv or "--no_cache" in argv or output is None:
        return None
    if any(arg == flag or arg.startswith(f"{flag}=") for arg in argv for flag in _BEYOND_THE_OUTPUT):
        return None
    state = read_state(output)
    if state is None or state["command"] != command_line(argv) or _output_digest(output) != state["output"]:
        return None
    if (code_digest() if code is None else code) != state["code"]:
        return None
    _checked = _take_inputs(state["roots"])
    _, started, inputs, newest, files = _checked
    if inputs is None:
        return None
    if inputs != state["inputs"]:
        if not _same_contents(state, output, files):
            return None
        # (the state of files just written vouches for nothing; an output another run took meanwhile
        # is that run's to describe)
        if file_states.settled(newest, started) and _output_digest(output) == state["output"]:
            with contextlib.suppress(OSError):  # (kept as it was: the next check hashes them again)
                _write_state(output, {**state, "inputs": inputs}, files)
    return _manifest(output)


def describe(manifest: dict) -> str:
    """What the command says when it leaves an up-to-date output as it is."""
    return (f"beam-etl: {manifest['flags']['output']} is up to date: its inputs, flags and code have "
            f"not changed since run {manifest.get('run_id', '?')} wrote it ({manifest['num_inputs']:,} inputs -> "
            f"{manifest['num_written']:,} written, {manifest['num_rejected']:,} rejected); nothing to do "
            "(--no_cache runs the job again).")


class StartingCode:
    """The job's code as a command starts, before it imports any of it: ``job``, its
    :func:`code_digest`; ``chain``, the per-image chain's
    :func:`~beam_etl.code_version.chain_version`, of the files as they were then. What the
    run's outputs, outcomes and state are described by; a file changed while the run goes on is
    found against them."""

    def __init__(self, sources: dict[str, bytes]):
        self._sources = sources
        self.job = code_digest(sources)

    @classmethod
    def now(cls) -> StartingCode:
        return cls(source_digests())

    @functools.cached_property
    def chain(self) -> dict[str, str]:
        # (which modules are the chain's is read when a run asks: a command answered from the
        # state never parses them)
        return code_version.chain_version(self._sources)


class Snapshot:
    """The inputs' snapshot of a run about to start, written as the state once it has committed
    (:meth:`record`). ``command``: :func:`command_line`; ``roots``: the source folders (None: a
    source that is not a local folder); ``code``: the job's :func:`code_digest` as the command
    started (default: now)."""

    def __init__(self, command: dict, output: str, roots: list[str] | None, code: str | None = None):
        self._output = local_path(output)
        self._state = None
        if self._output is None or roots is None:
            return
        global _checked  # pylint: disable=global-statement
        roots = sorted({os.path.abspath(root) for root in roots})
        checked, _checked = _checked, None
        _, started, inputs, newest, files = checked if checked and checked[0] == tuple(roots) else _take_inputs(roots)
        if inputs is None or not file_states.settled(newest, started):
            return
        self._state = {"format": FORMAT, "command": command, "roots": roots, "inputs": inputs,
                       "code": code_digest() if code is None else code}
        self._files = files

    def record(self, run_id: str) -> bool:
        """Writes the state beside the output run ``run_id`` committed (atomically: a crash
        leaves none); none once another run has taken the output (its lease, or its manifest,
        seen after the snapshot). Returns whether it wrote one."""
        if self._state is None or code_digest() != self._state["code"]:
            return False  # (the code changed while the run went on: which made the output is not known)
        output = _output_digest(self._output)
        committed = _manifest(self._output)
        if output is None or committed is None or committed.get("run_id") != run_id:
            return False
        _write_state(self._output, {**self._state, "output": output,
                                    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, self._files)
        return True


_PARTIAL = re.compile(f"(?:{re.escape(UP_TO_DATE)}|{re.escape(UP_TO_DATE_FILES)})" + r"\.([0-9]+)\.partial")
_PARTIAL_LEFT_S = 60.0  # a state's partial file is written in milliseconds: one older than this was left


def _remove_dead_partials(output: str) -> None:
    """Removes the state's files that a process killed while it wrote them left: named by a pid
    that no process of this host has, and older than a writer takes (a writer in another pid
    namespace, a container's, writes beside the same output under a pid this host may not know)."""
    try:
        names = os.listdir(output)
    except OSError:
        return
    for name in names:
        match = _PARTIAL.fullmatch(name)
        if match and not is_running(int(match.group(1))):
            path = os.path.join(output, name)
            with contextlib.suppress(OSError):
                if time.time() - os.lstat(path).st_mtime > _PARTIAL_LEFT_S:
                    os.remove(path)


def _write_state(output: str, state: dict, files: dict) -> None:
    """The state beside ``output``, and its ``UP_TO_DATE_FILES``, each written whole (a crash leaves the
    old one, or a state whose files do not match, which is then not believed)."""
    data = json.dumps(files, sort_keys=True, separators=(",", ":")).encode("ascii")
    state = {**state, "files": hashlib.sha256(data).hexdigest()}
    state["checksum"] = _checksum(state)
    _remove_dead_partials(output)
    for name, body in ((UP_TO_DATE_FILES, data), (UP_TO_DATE, json.dumps(state, sort_keys=True).encode("utf-8"))):
        path = os.path.join(output, name)
        partial = f"{path}.{os.getpid()}.partial"
        with open(partial, "wb") as file:
            file.write(body)
        os.replace(partial, path)
