"""File operations on literal paths, local or in an object store (``gs://``).

Beam's ``FileSystems.match`` and ``FileSystems.delete`` take *patterns*: ``runs/exp[12]`` names
``runs/exp1`` and ``runs/exp2``. Every path the job builds from ``--output`` or
``--oxford_pets`` goes through here instead, taken literally whatever characters it holds:
local paths with :mod:`os`, others through FileSystems with their glob characters escaped
(:func:`beam_etl.globs.escape_glob`). Only the ``--images``/``--masks`` flags are patterns.

Reads of ``gs://`` objects go through Beam's GCS client, kept: ``FileSystems.open`` makes a
new client, with its own HTTP connections, for every object it opens. The job reads two small
objects per input (and its cache's entries one by one), so a process keeps a few clients
(:func:`gcs_client`), each used by one thread at a time: a read of a 60 KB object from the
tests' Cloud Storage emulator takes 2.1 ms so, against 5.9 ms through ``FileSystems.open``;
on Cloud Storage, where connections are TLS, each new one costs round trips more.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading

from apache_beam.io.filesystems import FileSystems

from beam_etl import regular_files
from beam_etl.globs import escape_glob
from beam_etl.output_layout import is_local, local_path


def absolute(path: str, flag: str, glob: bool = False) -> str:
    """A local path, or ``glob``, given as ``flag``, that names the same files from any folder: a
    relative one joined to the working folder (escaped, in a glob), its ``.`` and empty parts
    dropped, ``..`` kept (the OS resolves it after links). Others (``gs://``, ``file://``,
    absolute) as they are, and so is a relative one in a working folder whose name is not UTF-8
    (Beam carries paths as text). What the output records (its manifest's flags, the lineage
    index, the rejected list) is then where the files are, not where they were from a folder it
    does not record. A ``~`` the shell did not expand raises ValueError naming ``flag``."""
    if path.startswith("~"):
        raise ValueError(f"{flag} {path!r}: the shell did not expand '~' (it does not after '='): give it with "
                         "a space, or the full path")
    if not path or "://" in path or os.path.isabs(path):
        return path
    here = os.getcwd()
    try:
        here.encode("utf-8")
    except UnicodeEncodeError:
        return path
    parts = [part for part in path.split("/") if part not in (".", "")]
    return "/".join([(escape_glob(here) if glob else here).rstrip("/"), *parts]) + ("/" if path.endswith("/") else "")


def may(path: str, mode: int) -> bool:
    """Whether this process may do ``mode`` (``os.R_OK | os.W_OK``...) to the local ``path``,
    as it would open it (its effective user and groups)."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def write_refusal(folder: str) -> str | None:
    """(A local path) why this user could not write files in ``folder``, or None: it, or the
    nearest folder above it that is there (where it would be made), is not a folder, or one this
    user may not write to (nor list, where it is there). A path in an object store: None (what
    its store allows is known only by writing)."""
    if not is_local(folder):
        return None
    path, need = os.path.abspath(local_path(folder)), os.R_OK | os.W_OK | os.X_OK
    while not os.path.lexists(path):
        path, need = os.path.dirname(path), os.W_OK | os.X_OK
    if not os.path.isdir(path):
        return f"{path} is not a folder"
    missing = [what for what, mode in (("list", os.R_OK), ("write to", os.W_OK | os.X_OK))
               if need & mode and not may(path, mode)]
    return f"this user may not {' or '.join(missing)} {path}" if missing else None


def _overrides_ownership() -> bool:
    """Whether this process may move and delete others' files in a folder with the sticky bit
    (``CAP_FOWNER``, root's unless dropped)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 3 & 1)  # (CAP_FOWNER is capability 3)
    except OSError:
        pass
    return os.geteuid() == 0


def others_files(folder: str, names) -> list[str]:
    """(A local ``folder``) those of its entries ``names`` that this user may not move or
    delete though it may write to ``folder``: another user's, in a folder with the sticky bit
    (as /tmp) that this user does not own."""
    path = local_path(folder)
    info = os.stat(path)
    if not info.st_mode & stat.S_ISVTX or info.st_uid == os.geteuid() or _overrides_ownership():
        return []
    theirs = []
    for name in names:
        try:
            if os.lstat(os.path.join(path, name)).st_uid != os.geteuid():
                theirs.append(name)
        except FileNotFoundError:
            pass
    return theirs


def exists(path: str) -> bool:
    return os.path.lexists(local_path(path)) if is_local(path) else FileSystems.exists(path)


def list_files(directory: str, limit: int | None = None, folder_markers: bool = False) -> list[str]:
    """Every file under ``directory`` (recursively), as ``/``-separated names relative to it.
    ``folder_markers``: in object stores, also the empty ``name/`` objects that TensorFlow
    writes for folders."""
    names = []
    if is_local(directory):
        root = local_path(directory)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in sorted(filenames):
                names.append(os.path.relpath(os.path.join(dirpath, filename), root).replace(os.sep, "/"))
                if limit is not None and len(names) >= limit:
                    return names
        return names
    prefix = directory.rstrip("/") + "/"
    result = FileSystems.match([escape_glob(prefix) + "**"], limits=[limit])[0]
    # (TensorFlow writes empty "folder/" objects to stores: they are not files)
    return sorted(metadata.path[len(prefix):] for metadata in result.metadata_list
                  if folder_markers or not metadata.path.endswith("/"))


def file_sizes(directory: str) -> dict[str, int]:
    """``{name: bytes}`` of every file under ``directory``, named as :func:`list_files` names
    them; in an object store from one listing."""
    if is_local(directory):
        root = local_path(directory)
        return {name: os.stat(os.path.join(root, name)).st_size for name in list_files(directory)}
    prefix = directory.rstrip("/") + "/"
    result = FileSystems.match([escape_glob(prefix) + "**"])[0]
    return {metadata.path[len(prefix):]: metadata.size_in_bytes for metadata in result.metadata_list
            if not metadata.path.endswith("/")}


def modified(path: str) -> float:
    """When ``path`` was last written, in seconds since the epoch."""
    return os.stat(local_path(path)).st_mtime if is_local(path) else FileSystems.last_updated(path)


def named(error: OSError, path: str) -> OSError:
    """``error``, or, where it names no file (a write's or a flush's: the disk is full, the file
    too large), the same error naming ``path``, so that a failed run's message says where."""
    if error.filename is not None or error.errno is None:
        return error
    renamed = OSError(error.errno, error.strerror, path)
    renamed.__cause__ = error
    return renamed


@contextlib.contextmanager
def naming(path: str):
    """Raises an OSError from the block as :func:`named` ``path``."""
    try:
        yield
    except OSError as error:
        raise named(error, path)  # pylint: disable=raise-missing-from  # (its cause is set: itself, or the error)


def make_parent(path: str) -> None:
    if is_local(path):
        os.makedirs(os.path.dirname(local_path(path)) or ".", exist_ok=True)


def rename(source: str, destination: str) -> None:
    """Moves one file; the destination must not exist."""
    if is_local(source):
        make_parent(destination)
        os.rename(local_path(source), local_path(destination))
    else:
        FileSystems.rename([source], [destination])


# What a filesystem answers when it cannot sync a folder (vboxsf, some CIFS and FUSE mounts):
# there a folder's entries are as durable as it makes them, as PostgreSQL assumes too.
_FOLDER_SYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EISDIR, errno.EACCES}


def sync(paths) -> None:
    """Puts the (local) files and folders ``paths`` on disk: their bytes, or a folder's entries
    (the renames into it). Object stores keep what they acknowledged: nothing to do there."""
    for path in paths:
        if not is_local(path):
            continue
        path = local_path(path)
        try:
            descriptor = os.open(path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        except OSError as error:
            if not (error.errno in _FOLDER_SYNC_UNSUPPORTED and os.path.isdir(path)):
                raise


def delete_file(path: str) -> None:
    """Deletes one file; a missing file is not an error (deletes are retried after crashes)."""
    if is_local(path):
        try:
            os.remove(local_path(path))
        except FileNotFoundError:
            pass
    elif path.endswith("/"):  # a folder marker: this one object (FileSystems would delete the prefix)
        from apache_beam.io.gcp.gcsio import GcsIO  # pylint: disable=import-outside-toplevel
        GcsIO().delete(path)
    elif FileSystems.exists(path):
        FileSystems.delete([escape_glob(path)])


def read_version(path: str) -> tuple[bytes, int | None]:
    """The bytes of the file ``path`` and, on ``gs://``, the generation of the object they are of
    (None elsewhere), for :func:`delete_version`. A missing file raises FileNotFoundError."""
    if not path.startswith("gs://"):
        return read_bytes(path), None
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    for _ in range(5):  # (replaced between the object's metadata and its bytes: read the new one)
        blob = _gcs_blob(path)
        blob = blob.bucket.get_blob(blob.name)
        if blob is None:
            raise FileNotFoundError(path)
        generation = blob.generation  # (the download sets it again, from its answer's headers)
        try:
            return blob.download_as_bytes(if_generation_match=generation), generation
        except exceptions.NotFound:
            raise FileNotFoundError(path) from None
        except exceptions.PreconditionFailed:
            continue
    raise OSError(f"{path} was replaced on every one of 5 reads")


def delete_version(path: str, generation: int | None) -> bool:
    """Deletes the file ``path`` if it is still what :func:`read_version` read: on ``gs://``, if its
    generation is still ``generation`` (a precondition Cloud Storage checks atomically); False if
    it is not, or is gone. Elsewhere (``generation`` None) an unconditional :func:`delete_file`."""
    if generation is None:
        delete_file(path)
        return True
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    try:
        _gcs_blob(path).delete(if_generation_match=generation)
    except (exceptions.PreconditionFailed, exceptions.NotFound):
        return False
    return True


def remove_empty_directories(directory: str, names) -> None:
    """Removes the (local) parent folders of ``names`` under ``directory`` that are now empty."""
    if not is_local(directory):
        return  # object stores have no folders
    root = local_path(directory)
    parents = {os.path.dirname(name) for name in names} - {""}
    for parent in sorted(parents, key=lambda p: -p.count("/")):
        while parent:
            try:
                os.rmdir(os.path.join(root, parent))
            except OSError:
                break  # not empty, or gone
            parent = os.path.dirname(parent)


def prune_empty_directories(directory: str, keep_top: bool = False) -> None:
    """Removes the empty (local) folders under ``directory``, and ``directory`` itself if empty
    and not ``keep_top``. Never deletes a file, so it is safe beside another writer."""
    if not is_local(directory):
        return
    root = local_path(directory)
    for dirpath, _, _ in sorted(os.walk(root), key=lambda entry: -len(entry[0])):
        if dirpath == root and keep_top:
            continue
        try:
            os.rmdir(dirpath)
        except OSError:
            pass  # not empty


# Idle GcsIO clients of this process, by where they connect: Cloud Storage, or the emulator that
# STORAGE_EMULATOR_HOST names (read as a client is made). A forked child makes its own.
_gcs_clients: dict[tuple[int, str | None], list] = {}
_gcs_lock = threading.Lock()


@contextlib.contextmanager
def gcs_client():
    """A GcsIO client of this process's pool, for this thread until the block ends."""
    from apache_beam.io.gcp.gcsio import GcsIO  # pylint: disable=import-outside-toplevel

    key = (os.getpid(), os.environ.get("STORAGE_EMULATOR_HOST"))
    with _gcs_lock:
        idle = _gcs_clients.setdefault(key, [])
        client = idle.pop() if idle else None
    if client is None:
        client = GcsIO()
    try:
        yield client
    finally:
        with _gcs_lock:
            _gcs_clients.setdefault(key, []).append(client)


def _read_gcs(path: str, offset: int = 0, length: int | None = None) -> bytes:
    """``length`` bytes (None: the rest) of the ``gs://`` object ``path`` from ``offset``, through
    a kept client (:func:`gcs_client`); a missing object raises FileNotFoundError."""
    from google.api_core.exceptions import NotFound  # pylint: disable=import-outside-toplevel
    buffer = {} if length is None else {"read_buffer_size": max(length, 1)}  # (fetch no more than that)
    try:
        with gcs_client() as client, client.open(path, **buffer) as handle:
            handle.seek(offset)
            return handle.read() if length is None else handle.read(length)
    except NotFound as error:
        raise FileNotFoundError(path) from error


def read_bytes(path: str) -> bytes:
    """The whole file ``path``. A missing local or ``gs://`` file raises FileNotFoundError."""
    if is_local(path):  # (a FIFO in a file's place is refused, never waited on)
        return regular_files.read(local_path(path))
    if path.startswith("gs://"):
        return _read_gcs(path)
    with FileSystems.open(path) as handle:
        return handle.read()


def read_range(path: str, offset: int, length: int) -> bytes:
    """Up to ``length`` bytes of the file ``path`` from ``offset``, fetching no more than those
    (Beam's reader of a ``gs://`` object fetches 16 MiB at a time). A missing local or ``gs://``
    file raises FileNotFoundError."""
    if is_local(path):
        return regular_files.read(local_path(path), offset, length)
    if path.startswith("gs://"):
        return _read_gcs(path, offset, length)
    with FileSystems.open(path) as handle:
        handle.seek(offset)
        return handle.read(length)


def write_bytes(path: str, data: bytes, sync: bool = False) -> None:
    """Writes ``data`` to ``path``; ``sync``: on disk before returning (local files)."""
    make_parent(path)
    if is_local(path):
        with naming(path), open(local_path(path), "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        return
    with naming(path), FileSystems.create(path) as handle:
        handle.write(data)


def create_exclusive(path: str, data: bytes) -> bool:
    """Creates ``path`` holding ``data`` only if nothing is there; False if something is (on
    ``gs://``, something else: see below).

    Locally ``O_CREAT | O_EXCL``; on ``gs://`` an upload with ``ifGenerationMatch=0``, the
    precondition Cloud Storage checks atomically.
    """
    if is_local(path):
        make_parent(path)
        try:
            descriptor = os.open(local_path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with naming(path), os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True
    if not path.startswith("gs://"):
        raise ValueError(f"no exclusive create on {path}: only local paths and gs:// are supported")
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel

    blob = _gcs_blob(path)
    try:
        blob.upload_from_string(data, if_generation_match=0)
    except exceptions.PreconditionFailed:
        # The client retries a request whose answer was lost: where the first attempt created the
        # object, the retry fails its precondition, and what is there is this call's own (every
        # caller's ``data`` is its own: a run's id, a process and its start).
        try:
            return blob.download_as_bytes() == data
        except exceptions.NotFound:
            return False
    return True


def _gcs_blob(path: str):
    """The ``gs://`` object ``path``, through the client of the [gcp] extra as Beam's GcsIO makes it."""
    from apache_beam.io.gcp.gcsio import GcsIO  # pylint: disable=import-outside-toplevel

    bucket, _, name = path[len("gs://"):].partition("/")
    return GcsIO().client.bucket(bucket).blob(name)
