"""Publishing a run: who may write in ``--output``, and the swap that replaces an earlier output.

A run writes every file in a folder of its own, ``.incomplete/staged/<run id>/``, first (a run
that lost its lease and writes on writes in its own, never over these). Only when all of them
are there does :func:`commit` move them in, in an order a reader can trust: the earlier manifest goes out
first (from then on a reader finds no manifest and refuses the folder, instead of reading a
mix), then the earlier files (into ``.incomplete/previous/``), then the new files, and the new
manifest last. A journal written before the first move says what moves where, so that a run
killed mid-swap is rolled back by the next run that takes the lease (:func:`clear_leftovers`):
the earlier output comes back byte for byte. The new files are on disk (``fsync``) before the
swap, and the swap before the earlier files are deleted, so a power cut too leaves one whole
version or the journal's way back. Nothing outside ``--output`` is touched, and inside
it only the files the earlier manifest lists and the job's own ``.incomplete/``. The tests kill a
run at each step of the commit through :mod:`beam_etl.beam.crash`.
"""

from __future__ import annotations

import json
import logging
import os
import time

from beam_etl.beam import filesystem, lease
from beam_etl.beam.crash import crash_point
from beam_etl.manifest_checks import manifest_problems
from beam_etl.output_layout import (INCOMPLETE_DIR, JOB_FOLDERS, JOURNAL, LEASE, MANIFEST, PREVIOUS_DIR, REJECTED_FILE,
                                    STAGING_DIR, TRANSFORM_DIRS, is_job_file, is_listable_name, is_run_leftover, join,
                                    parse_manifest, refuse_unless_regular, staging_dir)

_log = logging.getLogger(__name__)


def _describe(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_manifest_if_any(output: str, checked: bool = True) -> dict | None:
    """``output``'s manifest if it is a beam-etl manifest; None if there is none or it is not.
    One the readers' checks refuse (:func:`beam_etl.manifest_checks.manifest_problems`: a file
    with a manifest's keys and little else, an output's manifest edited) is not one: the files it
    lists are not taken for the job's, to replace or to delete. (``checked=False``: it is, where
    what is asked is whether a folder may be another output, to be kept out of.)"""
    path = join(output, MANIFEST)
    if not filesystem.exists(path):
        return None
    try:
        refuse_unless_regular(path)
        manifest = parse_manifest(filesystem.read_bytes(path), path)
    except (ValueError, OSError):
        return None
    return None if checked and manifest_problems(manifest) else manifest


def owned_files(output: str, manifest: dict) -> list[str]:
    """The files ``manifest`` says the job wrote in ``output`` (relative names). A name that
    could reach outside ``output`` or is not one the job writes is never the job's, whatever a
    (possibly hand-edited) manifest says."""
    if "files" in manifest:
        names = list(manifest["files"])
    else:  # outputs written before manifests listed every file: shards, rejected list, tf.Transform's
        names = [name for split in manifest["splits"].values() for name in split["files"]] + [REJECTED_FILE]
        for directory in TRANSFORM_DIRS:
            if filesystem.is_local(output) and os.path.islink(join(output, directory)):
                continue  # never follow a link out of the output
            names += [f"{directory}/{name}" for name in filesystem.list_files(join(output, directory))]
    return sorted(name for name in names if is_listable_name(name))


def _job_folders(root: str) -> list[str]:
    """The paths of the job's folders in the local folder ``root`` (:data:`JOB_FOLDERS`, and
    any folder in them; a link is named, never walked into), whether they are there or not."""
    folders = []
    for top in JOB_FOLDERS:
        folders.append(os.path.join(root, top))
        for dirpath, dirnames, _ in os.walk(folders[-1]):  # (never into a link)
            folders += [os.path.join(dirpath, name) for name in dirnames]
    return folders


def linked_folders(output: str) -> list[str]:
    """The job's folders in a local ``output`` (:data:`JOB_FOLDERS`, and any folder in them) that
    are links, as ``name -> target``: what a move, write or delete in them would reach is
    outside ``output``."""
    if not filesystem.is_local(output):
        return []  # (an object store has no links)
    root = filesystem.local_path(output)
    return [f"{os.path.relpath(path, root)} -> {os.readlink(path)}" for path in _job_folders(root)
            if os.path.islink(path)]


def write_refusal(output: str) -> str | None:
    """(A local ``output``) why this user could not write the run there, or None: ``output``
    (or the folder it would be made in), or a folder of the job's in it (whose files a run
    replaces), is one this user may not write to (:func:`filesystem.write_refusal`), or holds
    a file of the job's that this user may not move or delete there (another user's, in a
    folder with the sticky bit: :func:`filesystem.others_files`)."""
    if not filesystem.is_local(output):
        return None
    root = filesystem.local_path(output)
    for folder in [root, *(path for path in _job_folders(root) if os.path.isdir(path))]:
        refusal = filesystem.write_refusal(folder)
        if refusal is not None:
            return refusal
        if os.path.isdir(folder):
            names = os.listdir(folder)
            theirs = filesystem.others_files(folder, [name for name in names if is_job_file(name)]
                                             if folder == root else names)
            if theirs:
                return (f"this user may not move or delete {os.path.join(folder, theirs[0])} (another user's, "
                        "in a folder with the sticky bit)")
    return None


def check_writable(output: str) -> None:
    """Launch-time: raises ValueError, naming ``--output``, where :func:`write_refusal` has a
    reason (checked once, before the lease: what a user may write does not change with it)."""
    refusal = write_refusal(output)
    if refusal is not None:
        raise ValueError(f"--output {output!r}: {refusal}; choose a folder this user may write to")


def _refuse_links(output: str, error=RuntimeError) -> None:
    linked = linked_folders(output)
    if linked:
        raise error(f"--output {output!r}: {_describe(linked).replace(' -> ', ' is a link to ')}; the job "
                    "moves, writes and deletes files only inside --output, never through a link: put a "
                    "folder in its place, or choose another --output")


def check_output(output: str, overwrite: bool) -> dict | None:
    """Launch-time, read-only: refuses an ``output`` this run may not write (ValueError);
    returns the manifest of the output there (None: none).

    A folder of the job's there that is a link (:func:`linked_folders`), or a file by a folder's
    name (:data:`JOB_FOLDERS`); a name the job writes, in a folder that is not a beam-etl output
    (no manifest of ours, no lease of a run of ours: ``overwrite`` would not help, and the error
    does not suggest it). Without ``overwrite``: any name the job writes already there. With it:
    files in ``.incomplete/`` that no lease covers, and such names (a folder of the job's holds
    only these) that the manifest does not list.
    """
    _refuse_links(output, ValueError)
    leased = lease.read_holder(output) is not None  # (before the listing: a run may end meanwhile)
    names = filesystem.list_files(output)
    files = [name for name in names if name in JOB_FOLDERS]
    if files:  # (a move into it, or the lease's creation, would fail half way)
        raise ValueError(f"--output {output!r} holds a file named {files[0]!r} where the job keeps a folder: "
                         "move it, or choose another --output")
    # .incomplete/ is a run's own while it holds the lease there (the lease decides who goes on);
    # without one, it is somebody's folder like any other.
    present = [name for name in names
               if is_job_file(name) and not (leased and name.startswith(INCOMPLETE_DIR + "/"))]
    if not present:
        return None
    try:
        refuse_unless_regular(join(output, MANIFEST))
    except ValueError as error:
        raise ValueError(f"--output {output!r}: {error}") from None
    manifest = read_manifest_if_any(output)
    if manifest is None and not leased:
        has = (f"its {MANIFEST} is not one beam-etl wrote, or was edited since: the readers refuse it"
               if MANIFEST in present else f"it has no beam-etl {MANIFEST}")
        raise ValueError(f"--output {output!r} is not a beam-etl output ({has}) but holds {_describe(present)}: "
                         "--overwrite replaces only what beam-etl wrote; choose another --output or move those files")
    if not overwrite:
        raise ValueError(f"--output {output!r} already holds {_describe(present)}; pass --overwrite "
                         "to replace an earlier beam-etl output there")
    unheld = [] if leased else _strangers_in_incomplete(output, present)
    if unheld:
        raise ValueError(f"--output {output!r} holds {_describe(unheld)}, which no run of beam-etl holds "
                         f"(there is no lease in {INCOMPLETE_DIR}/): --overwrite replaces only what "
                         "beam-etl wrote; move those files")
    if manifest is not None:
        owned = set(owned_files(output, manifest))
        # A name this run may write, it would refuse to replace half way; any other in a folder
        # of the job's, it would leave beside an output whose manifest does not list it.
        strangers = [name for name in present
                     if name != MANIFEST and not name.startswith(INCOMPLETE_DIR + "/") and name not in owned]
        if strangers:
            raise ValueError(f"--output {output!r} holds {_describe(strangers)}, which its "
                             f"{MANIFEST} does not list: --overwrite replaces only what beam-etl "
                             "wrote; move those files")
    return manifest


def _strangers_in_incomplete(output: str, present: list[str]) -> list[str]:
    """The files of ``present`` in ``.incomplete/`` that no run wrote there, where no lease is:
    looked at again before they are named (a run may have ended, or started, since ``present``
    was listed)."""
    unheld = [name for name in present if name.startswith(INCOMPLETE_DIR + "/") and not is_run_leftover(name)]
    if not unheld or lease.read_holder(output) is not None:
        return []
    return [name for name in unheld if filesystem.exists(join(output, name))]


def _write_journal(output: str, journal: dict) -> None:
    """Written whole or not at all: to a temporary name, flushed to disk, then renamed."""
    temporary = join(output, JOURNAL + ".tmp")
    filesystem.write_bytes(temporary, json.dumps(journal, sort_keys=True).encode("utf-8"), sync=True)
    filesystem.rename(temporary, join(output, JOURNAL))
    filesystem.sync([join(output, INCOMPLETE_DIR)])  # (the rename on disk before the first move)


def commit(output: str, run_id: str, manifest: dict, new_files: list[str]) -> None:
    """Moves the ``new_files`` run ``run_id`` staged (and the manifest) into ``output``,
    replacing the earlier output; then clears ``.incomplete/`` and releases the lease."""
    previous = read_manifest_if_any(output)
    if previous is not None and previous.get("run_id") == run_id:  # a retried commit step: the first got this far
        holder = lease.read_holder(output)
        if holder is not None and holder.run_id == run_id:
            finish(output, run_id)
        else:  # it released the lease, which another run may hold now: .incomplete/ is that run's
            _remove_staged(output, run_id)
        return
    lease.check(output, run_id)
    _refuse_links(output)  # (one made since the launch looked)
    if rollback(output):  # a retried commit step starts again from the earlier output
        previous = read_manifest_if_any(output)
    old_files = owned_files(output, previous) if previous is not None else []
    owned = set(old_files)
    theirs = [name for name in new_files + [MANIFEST]
              if name not in owned and not (name == MANIFEST and previous is not None)
              and filesystem.exists(join(output, name))]
    if theirs:
        raise FileExistsError(f"--output {output!r} holds {_describe(theirs)}, which no beam-etl "
                              "manifest lists: the run will not replace files it did not write")
    staged = staging_dir(run_id)
    _check_staged(output, staged, manifest, new_files)
    filesystem.write_bytes(join(output, f"{staged}/{MANIFEST}"),
                           (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"), sync=True)
    # The new files on disk before the swap, and the swap before the earlier output is deleted
    # (finish): after a power cut the folder holds one whole version, or the journal's way back.
    filesystem.sync(join(output, f"{staged}/{name}") for name in new_files)
    _write_journal(output, {"run_id": run_id, "staged": staged, "new": sorted(new_files),
                            "previous": [MANIFEST] + old_files if previous is not None else []})
    crash_point("before_commit")
    still_held = _LeaseCheck(output, run_id)  # (a host asleep since the check above: another run's now)
    if previous is not None:
        still_held()
        filesystem.rename(join(output, MANIFEST), join(output, f"{PREVIOUS_DIR}/{MANIFEST}"))
        crash_point("old_manifest_out")
        for name in old_files:
            if filesystem.exists(join(output, name)):
                still_held.if_due()
                filesystem.rename(join(output, name), join(output, f"{PREVIOUS_DIR}/{name}"))
        crash_point("old_files_out")
    for name in new_files:
        still_held.if_due()
        filesystem.rename(join(output, f"{staged}/{name}"), join(output, name))
    crash_point("new_files_in")
    still_held.if_due()
    filesystem.rename(join(output, f"{staged}/{MANIFEST}"), join(output, MANIFEST))
    filesystem.sync(_folders_of(output, new_files + [MANIFEST]))
    crash_point("manifest_in")
    filesystem.remove_empty_directories(output, old_files)
    finish(output, run_id)


LEASE_RECHECK_S = 1.0  # (wall-clock seconds) how long a swap goes on between two looks at the lease


class _LeaseCheck:
    """:func:`lease.check` during the swap: once before the first move, then before a move
    whenever :data:`LEASE_RECHECK_S` of wall-clock time have passed since the last check (a
    clock that counts time asleep: a host that slept past the lease's timeout mid-commit checks
    before its next move). A run that lost its lease moves nothing more; the run that took it
    rolled the swap back when it did."""

    def __init__(self, output: str, run_id: str):
        self._output, self._run_id = output, run_id
        self._checked = None

    def __call__(self) -> None:
        lease.check(self._output, self._run_id)
        self._checked = time.time()

    def if_due(self) -> None:
        if self._checked is None or not 0 <= time.time() - self._checked < LEASE_RECHECK_S:
            self()


def _check_staged(output: str, staged: str, manifest: dict, new_files: list[str]) -> None:
    """Raises RuntimeError unless every file in the run's staging folder ``staged`` is the size
    the manifest says its writer wrote: a file that something else rewrote before the commit is
    not published under this manifest (one of the same size is left to ``verify``'s checksums:
    reading every file again here would cost the commit a pass over the whole output; a run that
    lost its lease writes in a staging folder of its own)."""
    sizes = filesystem.file_sizes(join(output, staged))
    for name in new_files:
        expected, found = manifest["files"].get(name, {}).get("bytes"), sizes.get(name)
        if found != expected:
            what = "is missing" if found is None else f"holds {found} bytes, not the {expected} its writer wrote"
            raise RuntimeError(f"{staged}/{name} in --output {output!r} {what}: another writer is "
                               "in the folder? Nothing was replaced")


def _folders_of(output: str, names) -> list[str]:
    """The folders in ``output`` that hold ``names`` and those above them, deepest first,
    ``output`` last."""
    folders = set()
    for name in names:
        parent = os.path.dirname(name)
        while parent:
            folders.add(parent)
            parent = os.path.dirname(parent)
    return [join(output, folder) for folder in sorted(folders, key=lambda f: (-f.count("/"), f))] + [output]


def rollback(output: str) -> bool:
    """Undoes an interrupted commit, if the journal shows one: the earlier output comes back as
    it was. A commit whose manifest is in place is kept (only its clean-up was left). Returns
    whether there was a journal."""
    path = join(output, JOURNAL)
    if not filesystem.exists(path):
        return False
    try:
        journal = json.loads(filesystem.read_bytes(path))
        # (a journal without "staged": a version of the job that staged in .incomplete/staged/ itself)
        staged = journal.get("staged", STAGING_DIR)
        if staged not in (STAGING_DIR, staging_dir(journal["run_id"])):
            raise ValueError(staged)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RuntimeError(f"{path} is unreadable: a commit was interrupted and cannot be rolled back "
                           f"automatically; the earlier output's files are in {join(output, PREVIOUS_DIR)}") from None
    current = read_manifest_if_any(output)
    if current is not None and current.get("run_id") == journal["run_id"]:
        return True  # committed: what is left is clean-up
    earlier = set(journal["previous"])
    for name in journal["new"]:
        staged_file, placed = join(output, f"{staged}/{name}"), join(output, name)
        if not filesystem.exists(placed):
            continue
        if name in earlier and not filesystem.exists(join(output, f"{PREVIOUS_DIR}/{name}")):
            continue  # the earlier output's file, not moved out yet (whether or not the new one is staged)
        if not filesystem.exists(staged_file):
            filesystem.rename(placed, staged_file)
        else:  # on gs:// a rename is a copy, then a delete (the earlier file, if any, is in previous/)
            filesystem.delete_file(placed)
    for name in journal["previous"][1:] + journal["previous"][:1]:  # the manifest last
        kept = join(output, f"{PREVIOUS_DIR}/{name}")
        if filesystem.exists(kept):
            filesystem.rename(kept, join(output, name))
    filesystem.remove_empty_directories(output, journal["new"])
    filesystem.delete_file(path)
    _log.warning("rolled back an interrupted commit of run %s in %s", journal["run_id"], output)
    return True


def _delete_files(folder: str, kept=lambda name: False) -> None:
    """Deletes the files under ``folder`` (and an object store's folder markers: last, deepest
    first) but those whose name (relative to ``folder``) is ``kept``."""
    names = filesystem.list_files(folder, folder_markers=True)
    for name in sorted(names, key=lambda n: (n.endswith("/"), -n.count("/"))):
        if not kept(name):
            filesystem.delete_file(join(folder, name))


def _clear_incomplete(output: str) -> str:
    """Deletes everything in ``output/.incomplete/`` but the lease; returns that folder."""
    incomplete = join(output, INCOMPLETE_DIR)
    _delete_files(incomplete, lambda name: f"{INCOMPLETE_DIR}/{name}" == LEASE
                  or (name.endswith("/") and LEASE.startswith(f"{INCOMPLETE_DIR}/{name}")))
    filesystem.prune_empty_directories(incomplete, keep_top=True)
    return incomplete


def clear_leftovers(output: str) -> None:
    """Run by a run that holds the lease: rolls back an interrupted commit and deletes what
    crashed runs left in ``.incomplete/`` (all but the lease)."""
    rollback(output)
    _clear_incomplete(output)


def _remove_staged(output: str, run_id: str) -> None:
    """Deletes run ``run_id``'s staging folder, and only it: another run may hold the lease."""
    staged = join(output, staging_dir(run_id))
    _delete_files(staged)
    filesystem.prune_empty_directories(staged)


def finish(output: str, run_id: str) -> None:
    """Deletes ``.incomplete/`` (staging, spill and temporary files, the journal) and releases
    the lease."""
    incomplete = _clear_incomplete(output)
    lease.release(output, run_id)
    filesystem.prune_empty_directories(incomplete)
    if not filesystem.is_local(output) and filesystem.exists(incomplete + "/"):
        filesystem.delete_file(incomplete + "/")  # TensorFlow's marker of the folder


def abandon(output: str, run_id: str) -> None:
    """After a failed or interrupted run: puts the earlier output back if a commit had begun,
    removes this run's temporary files and releases its lease. Best effort: problems are logged."""
    try:
        holder = lease.read_holder(output)
        if holder is None or holder.run_id != run_id:  # committed and released, or taken over
            _remove_staged(output, run_id)  # (the one folder here that is still this run's alone)
            return
        rollback(output)
        finish(output, run_id)
    except Exception:  # pylint: disable=broad-except  # the run's own failure is what matters
        _log.exception("could not clean up %s after the failed run %s", output, run_id)
