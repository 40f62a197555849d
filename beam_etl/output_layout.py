"""Every name the job writes in ``--output`` and the loader reads there. No Beam, no TensorFlow.

A finished output holds::

    manifest.json                             what is here (written last: the mark of completeness)
    <split>-SSSSS-of-NNNNN.tfrecord           the shards
    <split>-SSSSS-of-NNNNN.tfrecord.idx       each shard's record index (offset and size per record)
    rejected/rejected-00000-of-00001.jsonl    every refused input, with its uri and reason
    metadata/schema.pbtxt                     the records' schema (TensorFlow Metadata)
    lineage/<split>-SSSSS-of-NNNNN.jsonl      where each example came from (beam_etl.lineage), by shard
    lineage/changes.jsonl                     what changed against the output this one replaced
    transform_fn/ transformed_metadata/       tf.Transform's graph (without --no_statistics)

and, while a run holds it, ``.incomplete/``: the run's lease (also the marker that the folder is
a beam-etl output being written), the files it stages before the commit (in a folder named by
its run id), its spill files, the workers' progress counts, files being written (``tmp/``), and
during the commit the replaced output and the commit's journal. (tf.Transform traces its graph
in the system's temporary folder, once per machine: :mod:`beam_etl.beam.transform_template`.)
Names are relative, ``/``-separated; :func:`is_job_file` tells the job's own from a user's.
"""

from __future__ import annotations

import json
import os
import re
import stat

MANIFEST = "manifest.json"
REJECTED_DIR = "rejected"
REJECTED_FILE = f"{REJECTED_DIR}/rejected-00000-of-00001.jsonl"
TRANSFORM_DIRS = ("transform_fn", "transformed_metadata")  # what tft.TFTransformOutput reads
METADATA_DIR = "metadata"  # the raw records' schema, where tf.Transform and TFX look for it
RAW_SCHEMA = f"{METADATA_DIR}/schema.pbtxt"
LINEAGE_DIR = "lineage"
CHANGES_FILE = f"{LINEAGE_DIR}/changes.jsonl"

INCOMPLETE_DIR = ".incomplete"
LEASE = f"{INCOMPLETE_DIR}/lease.json"  # who writes here: the one writer, and the run marker
STAGING_DIR = f"{INCOMPLETE_DIR}/staged"  # each run's files, in a folder of its own (staging_dir), until the commit
SPILL_DIR = f"{INCOMPLETE_DIR}/spill"
PROGRESS_DIR = f"{INCOMPLETE_DIR}/progress"  # each worker's count of inputs done (beam_etl.beam.job_progress)
PREVIOUS_DIR = f"{INCOMPLETE_DIR}/previous"  # the replaced output, during the commit only
JOURNAL = f"{INCOMPLETE_DIR}/commit.json"  # the commit in progress: what moves where
TEMPORARY_DIR = f"{INCOMPLETE_DIR}/tmp"  # a file being written, before it is renamed into staged/
BROKEN_SUFFIX = ".broken-by-"  # LEASE + it + a run id: a dead run's lease, while that run breaks it
# What a run leaves in .incomplete/ (besides its lease, which it takes first and keeps if killed;
# only a run killed while it broke a dead run's lease leaves these without one).
RUN_FOLDERS = (STAGING_DIR, SPILL_DIR, PROGRESS_DIR, PREVIOUS_DIR, TEMPORARY_DIR)
RUN_FILES = (JOURNAL, JOURNAL + ".tmp")
# Each input's outcome by content (beam_etl.beam.example_cache), and the digests of the local
# files read, in segments (beam_etl.beam.outcome_store), kept across runs: not an output file (no
# manifest lists it, verify and the ownership checks pass it by), and never deleted.
CACHE_DIR = ".beam-etl-cache"
# What the last local run knew of its inputs and of this output (beam_etl.beam.up_to_date), so
# that the same command finds it up to date: not an output file either; a run that ends replaces it.
UP_TO_DATE = ".beam-etl-up-to-date.json"
# Each input file's state as that run's snapshot saw it (the state holds its SHA-256): read only
# when the source folders' digest differs.
UP_TO_DATE_FILES = UP_TO_DATE + ".files"

_RUN_ID = re.compile(r"[0-9A-Za-z_-]+")


def staging_dir(run_id: str) -> str:
    """Where run ``run_id`` stages its files: a folder of its own, so that a run which lost its
    lease and writes on (its host asleep past the lease's timeout) never writes over the files
    of the run that holds the lease, whose commit moves only its own folder's files."""
    if not _RUN_ID.fullmatch(run_id or ""):
        raise ValueError(f"not a run id: {run_id!r} (a run stages files only under the lease it holds)")
    return f"{STAGING_DIR}/{run_id}"


SPLITS = ("train", "val", "test")  # the output's splits, in the order they are reported
SHARD_DIGITS = 5  # a shard's number and count in its name: at most 99,999 files a split
_SHARD = re.compile(rf"({'|'.join(SPLITS)})-([0-9]{{{SHARD_DIGITS}}})-of-([0-9]{{{SHARD_DIGITS}}})\.tfrecord")
_INDEX = re.compile(_SHARD.pattern + r"\.idx")


def shard_name(split: str, shard: int, num_shards: int) -> str:
    return f"{split}-{shard:0{SHARD_DIGITS}d}-of-{num_shards:0{SHARD_DIGITS}d}.tfrecord"


def is_shard_name(name: str) -> bool:
    return _SHARD.fullmatch(name) is not None


def index_name(shard: str) -> str:
    """The record index beside a shard (NVIDIA DALI's: one ``offset size`` line per record)."""
    return f"{shard}.idx"


def lineage_name(shard: str) -> str:
    """The lineage index of the inputs whose original example is in ``shard``."""
    return f"{LINEAGE_DIR}/{shard.removesuffix('.tfrecord')}.jsonl"


def is_index_name(name: str) -> bool:
    return _INDEX.fullmatch(name) is not None


def first_format(name: str) -> int:
    """The first manifest format whose outputs hold a file of this name (earlier ones never did):
    3 for the records' indexes and schema, 4 for the lineage index; 1 for the rest."""
    top = name.split("/", 1)[0]
    if top == LINEAGE_DIR:
        return 4
    return 3 if is_index_name(name) or top == METADATA_DIR else 1


# The folders in --output whose files are the job's (a name in them is a job file).
JOB_FOLDERS = (INCOMPLETE_DIR, REJECTED_DIR, METADATA_DIR, LINEAGE_DIR, *TRANSFORM_DIRS)


def is_job_file(name: str) -> bool:
    """Whether ``name`` (relative to ``--output``) is a name this job writes: a file a run would
    write or replace there, so one a run refuses to find beside it without ``--overwrite``."""
    return (name == MANIFEST or is_shard_name(name) or is_index_name(name)
            or name.split("/", 1)[0] in JOB_FOLDERS)


def cache_folder(output: str, cache_dir: str | None) -> str:
    """Where the outcomes of a run into ``output`` are cached: ``--cache``, else inside the output."""
    return cache_dir or join(output, CACHE_DIR)


def is_listable_name(name: str) -> bool:
    """Whether a manifest may list ``name``: relative, ``/``-separated, without empty, ``.`` or
    ``..`` parts, a name the job writes (:func:`is_job_file`), and not in ``.incomplete/``. A
    commit owns, moves and deletes only such names, whatever a (hand-edited) manifest lists."""
    return (isinstance(name, str) and not name.startswith("/") and "\\" not in name
            and all(part not in ("", ".", "..") for part in name.split("/"))
            and is_job_file(name) and name.split("/", 1)[0] != INCOMPLETE_DIR)


def is_run_leftover(name: str) -> bool:
    """Whether ``name`` (relative to ``--output``) is one a run writes in ``.incomplete/``."""
    return (name.startswith(tuple(f"{folder}/" for folder in RUN_FOLDERS)) or name in RUN_FILES
            or (name.startswith(LEASE + BROKEN_SUFFIX) and "/" not in name[len(LEASE):]))


def join(directory: str, name: str) -> str:
    """``directory/name`` for any scheme, ``name`` relative and ``/``-separated."""
    return f"{directory.rstrip('/')}/{name}" if directory else name


def is_within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it: local paths after their links are
    resolved, others (``gs://``) by their text."""
    if not (is_local(folder) and is_local(path)):
        return path.rstrip("/") == folder.rstrip("/") or path.startswith(folder.rstrip("/") + "/")
    path, folder = os.path.realpath(local_path(path)), os.path.realpath(local_path(folder))
    return os.path.commonpath([path, folder]) == folder


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine's file system: no scheme, or ``file://``."""
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    """``file://x`` -> ``x``; a local path as it is."""
    return path.removeprefix("file://")


def is_regular(path: str) -> bool:
    """Whether the local file at ``path`` (``file://`` or not) is a regular file (or a link to
    one): only such a file is opened by the readers (a FIFO would block them for ever). Raises
    OSError where it is not there."""
    return stat.S_ISREG(os.stat(local_path(path)).st_mode)


def refuse_unless_regular(path: str) -> None:
    """Raises ValueError when the local ``path`` is there and is not a regular file
    (:func:`is_regular`): a manifest is one, and a read of a FIFO in its place would wait for ever."""
    if not is_local(path):
        return
    try:
        regular = is_regular(path)
    except OSError:
        return  # (not there, or not to be looked at: the read says so)
    if not regular:
        raise ValueError(f"{path} is not a regular file, as a manifest is")


def parse_manifest(data: bytes, path: str) -> dict:
    """The manifest in ``data`` (the bytes of ``path``): the one reader of its format, whatever
    file system brought the bytes. Raises ValueError for a file that is not a beam-etl manifest."""
    try:
        manifest = json.loads(data)
    except ValueError as error:
        raise ValueError(f"{path} is not a beam-etl manifest: {error}") from None
    if not (isinstance(manifest, dict) and "format_version" in manifest and "splits" in manifest):
        raise ValueError(f"{path} is not a beam-etl manifest (no format_version or splits)")
    return manifest


class IncompleteOutputError(FileNotFoundError):
    """The directory has no manifest: the job did not finish (or is being replaced right now),
    or it is not beam-etl output."""


def missing_manifest(path: str, output_dir: str) -> IncompleteOutputError:
    return IncompleteOutputError(
        f"{path} does not exist: {output_dir} is not a complete beam-etl output "
        "(the job did not finish, is replacing it right now, or wrote elsewhere)")
