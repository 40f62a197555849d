"""``OUTPUT/manifest.json``: what the job wrote, and the mark that the output is complete.

The manifest is built last, by a step that waits for every shard, the rejected list and the
transform graph to be staged, and goes in last, by the commit (:mod:`beam_etl.beam.commit`); a run
that fails leaves none of its own, and :func:`read_manifest` refuses a directory without one.
It lists every file of the output with its size, crc32c and (shards) record count, and is where
readers find the file list and the feature schema.
"""

from __future__ import annotations

import platform

import apache_beam as beam
import google_crc32c

import beam_etl
from beam_etl import lineage, schema
from beam_etl.beam import commit, example_cache, filesystem, sink
from beam_etl.code_version import chain_version
from beam_etl.config import JobConfig
from beam_etl.manifest_checks import manifest_problems
from beam_etl.output_layout import (CHANGES_FILE, MANIFEST, TRANSFORM_DIRS, join, missing_manifest, parse_manifest,
                                    refuse_unless_regular, staging_dir)

# 2: "files" lists every file with bytes and crc32c; "run_id".
# 3: the shards' record indexes (.tfrecord.idx) and metadata/schema.pbtxt.
# 4: the lineage index (lineage/), "lineage", and "changes" against the output replaced.
FORMAT_VERSION = 4

# What WriteManifest is given, by kind: the job's inputs (records and source rejections, counted
# here), and one report per shard, for the rejected list, the statistics, the records' schema and
# the lineage index.
INPUTS, SHARDS, REJECTED, STATISTICS, METADATA, LINEAGE = ("inputs", "shard", "rejected", "statistics", "metadata",
                                                           "lineage")
KINDS = (INPUTS, SHARDS, REJECTED, STATISTICS, METADATA, LINEAGE)


def read_manifest(output_dir: str) -> dict:
    path = join(output_dir, MANIFEST)
    if not filesystem.exists(path):
        raise missing_manifest(path, output_dir)
    refuse_unless_regular(path)
    return parse_manifest(filesystem.read_bytes(path), path)


def file_entry(path: str) -> dict:
    """``{"bytes", "crc32c"}`` of a file, read back (tf.Transform's files: small)."""
    return _entry_of(filesystem.read_bytes(path))


def _entry_of(data: bytes) -> dict:
    return {"bytes": len(data), "crc32c": google_crc32c.Checksum(data).hexdigest().decode("ascii")}


def staged_transform_files(output_dir: str, run_id: str) -> dict[str, dict]:
    """The tf.Transform files run ``run_id`` staged, as the manifest's ``files`` entries."""
    staged = join(output_dir, staging_dir(run_id))
    return {f"{directory}/{name}": file_entry(join(staged, f"{directory}/{name}"))
            for directory in TRANSFORM_DIRS
            for name in filesystem.list_files(join(staged, directory))}


def build_manifest(config: JobConfig, parts: list[tuple[str, object]],
                   transform_files: dict[str, dict] | None = None, run_id: str = "",
                   chain_code: dict[str, str] | None = None) -> dict:
    """Assembles the manifest from the writers' reports; raises if any input is unaccounted for.
    ``chain_code``: the per-image chain's code as the run started (default: as it is now)."""
    chain_code = chain_version() if chain_code is None else chain_code
    shards = sorted((info for kind, info in parts if kind == SHARDS), key=lambda i: i["file"])
    (rejected,) = [info for kind, info in parts if kind == REJECTED]
    num_inputs = sum(count for kind, count in parts if kind == INPUTS)
    splits = {}
    for split in config.splits:
        files = [info for info in shards if info["split"] == split]
        splits[split] = {
            "num_examples": sum(info["num_examples"] for info in files),
            "num_source_examples": sum(info["num_source_examples"] for info in files),
            "bytes": sum(info["bytes"] for info in files),
            "files": [info["file"] for info in files],
        }
    files = {info["file"]: {"bytes": info["bytes"], "crc32c": info["crc32c"],
                            "num_examples": info["num_examples"]} for info in shards}
    for info in shards:  # each shard's record index: one line per record
        index = info["index"]
        files[index["file"]] = {"bytes": index["bytes"], "crc32c": index["crc32c"],
                                "num_records": info["num_examples"]}
    files[rejected["file"]] = {"bytes": rejected["bytes"], "crc32c": rejected["crc32c"],
                               "num_records": rejected["num_rejected"]}
    for info in (info for kind, info in parts if kind == METADATA):
        files[info["file"]] = {"bytes": info["bytes"], "crc32c": info["crc32c"]}
    lineage_files = sorted(info["file"] for kind, info in parts if kind == LINEAGE)
    for info in (info for kind, info in parts if kind == LINEAGE):
        files[info["file"]] = {key: info[key] for key in ("bytes", "crc32c", "num_records")}
    statistics = next((info for kind, info in parts if kind == STATISTICS), None)
    absent = None
    if not config.statistics:
        absent = "--no_statistics"
    elif statistics is None or statistics.get("absent"):
        absent = statistics["absent"] if statistics else "no statistics were computed"
        statistics = None
    else:
        files.update(transform_files or {})
    written = sum(split["num_source_examples"] for split in splits.values())
    if written + rejected["num_rejected"] != num_inputs:
        raise RuntimeError(
            f"inputs are unaccounted for: {num_inputs} inputs but {written} written + "
            f"{rejected['num_rejected']} rejected")
    return {
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "num_inputs": num_inputs,
        "num_written": written,
        "num_rejected": rejected["num_rejected"],
        "num_examples": sum(split["num_examples"] for split in splits.values()),
        "rejected": {key: rejected[key] for key in ("file", "num_rejected", "by_reason", "by_stage")},
        "splits": splits,
        "image": config.image_info(),
        "features": schema.describe(),
        # Full-pass statistics of the training split (beam_etl.beam.statistics); None with
        # --no_statistics or an empty training split, and "statistics_absent" says which.
        "statistics": statistics,
        "statistics_absent": absent,
        "files": dict(sorted(files.items())),
        "flags": config.flags(),
        # The index of where each example came from, and the hash of the chain's code, of its
        # libraries' versions and of the flags that shape an example (beam_etl.lineage,
        # beam_etl.beam.example_cache).
        "lineage": {"files": lineage_files, "chain_version": example_cache.version(config, code=chain_code),
                    "chain_code": chain_code,
                    "chain_libraries": example_cache.library_versions()},
        "versions": {"beam_etl": beam_etl.__version__, "apache_beam": beam.__version__,
                     "python": platform.python_version()},
    }


def check_reject_fraction(config: JobConfig, manifest: dict) -> None:
    fraction = manifest["num_rejected"] / max(1, manifest["num_inputs"])
    if fraction > config.max_reject_fraction:
        raise RuntimeError(
            f"{manifest['num_rejected']} of {manifest['num_inputs']} inputs rejected "
            f"({fraction:.1%}) is above --max_reject_fraction={config.max_reject_fraction}; "
            f"by reason {manifest['rejected']['by_reason']}. --output {config.output!r} was not changed.")



def _index(directory: str, described: dict) -> dict[str, dict]:
    """The lineage index in ``directory`` of the output that the manifest ``described``
    describes; ValueError for a file that is not the one described."""
    return lineage.read_described(described, lambda name: filesystem.read_bytes(join(directory, name)))


def changes_against(output_dir: str, run_id: str, previous: dict, manifest: dict, resumed: bool = False) -> dict | None:
    """Stages ``lineage/changes.jsonl``: what changed from the ``previous`` output in
    ``output_dir`` (its manifest) to run ``run_id``'s (staged, described by ``manifest``); returns the
    manifest's ``changes`` (counts), or why they cannot be told.

    ``resumed``: ``previous`` is the output of the dead run this one resumes, committed before it
    died. Where this run's lineage index is that output's, this run made the same output again:
    it keeps what the dead run recorded against the output it replaced (its ``changes``, and its
    list's bytes; None where it replaced none), as the run, had it not died, would have left it.
    Otherwise inputs changed since, and what changed is told against the dead run's output, as a
    later run's would be."""
    changes = {"against_run": previous.get("run_id", "")}
    if not (previous.get("lineage") and manifest.get("lineage")):
        return {**changes, "unknown": "the output replaced has no lineage index (written before format 4)"}
    try:
        old = _index(output_dir, previous)
    except (OSError, ValueError) as error:
        return {**changes, "unknown": f"the output replaced has an unreadable lineage index: {error}"}
    new = _index(join(output_dir, staging_dir(run_id)), manifest)
    if resumed and old == new:
        kept = _kept_changes(output_dir, run_id, previous, manifest)
        if kept is not _UNREADABLE:
            return kept
    compared = lineage.compare(old, new)
    staged = sink.stage_file(output_dir, run_id, CHANGES_FILE, [compared.lines()])
    manifest["files"] = dict(sorted({**manifest["files"], CHANGES_FILE: {
        **staged, "num_records": len(compared.added) + len(compared.removed) + len(compared.changed)}}.items()))
    return {**changes, "file": CHANGES_FILE, **compared.counts()}


_UNREADABLE = object()  # (what _kept_changes returns for a record it cannot vouch for)


def _kept_changes(output_dir: str, run_id: str, previous: dict, manifest: dict):
    """(:func:`changes_against`) The ``previous`` output's ``changes``, its list staged again as
    run ``run_id``'s, into ``manifest``; None where it has none. :data:`_UNREADABLE` where its list
    is not the file its manifest describes (cut short, edited): the record is made anew."""
    record = previous.get("changes")
    if not isinstance(record, dict) or "file" not in record:  # (none, or not known: no list to keep)
        return record
    listed = previous.get("files", {}).get(CHANGES_FILE)
    if record["file"] != CHANGES_FILE or not isinstance(listed, dict):
        return _UNREADABLE
    try:
        data = filesystem.read_bytes(join(output_dir, CHANGES_FILE))
    except OSError:
        return _UNREADABLE
    if _entry_of(data) != {"bytes": listed.get("bytes"), "crc32c": listed.get("crc32c")}:
        return _UNREADABLE
    staged = sink.stage_file(output_dir, run_id, CHANGES_FILE, [data])
    manifest["files"] = dict(sorted({**manifest["files"], CHANGES_FILE: {
        **staged, "num_records": listed["num_records"]}}.items()))
    return dict(record)


def _write_manifest(parts, config: JobConfig, run_id: str, chain_code: dict[str, str], resumed: str = ""):
    has_transform = any(kind == STATISTICS and not info.get("absent") for kind, info in parts)
    manifest = build_manifest(config, parts, staged_transform_files(config.output, run_id) if has_transform else None,
                              run_id, chain_code)
    check_reject_fraction(config, manifest)
    previous = commit.read_manifest_if_any(config.output)
    if previous is not None and previous.get("run_id") != run_id:  # (a retried step: already committed)
        changes = changes_against(config.output, run_id, previous, manifest,
                                  resumed=bool(resumed) and previous.get("run_id") == resumed)
        if changes is not None:
            manifest["changes"] = changes
    problems = manifest_problems(manifest)  # what verify checks of it: never committed untrue
    if problems:
        raise RuntimeError(f"the manifest would say what is not so: {'; '.join(problems)}; "
                           f"--output {config.output!r} was not changed")
    commit.commit(config.output, run_id, manifest, list(manifest["files"]))
    yield manifest


def _tagged(kind):
    return lambda info: (kind, info)


class WriteManifest(beam.PTransform):
    """Takes ``{kind: PCollection}`` (:data:`INPUTS`: a tuple of PCollections, every input or
    source rejection in one of them, counted here; :data:`SHARDS`, :data:`REJECTED`,
    :data:`STATISTICS`, :data:`METADATA`, :data:`LINEAGE`: the writers' reports) and, once all
    have arrived, commits the staged files with their manifest (run ``run_id`` holds the
    output's lease); yields the manifest dict.

    Each PCollection of inputs is counted on its own: a count is combined where its elements
    are made, while flattening them first would pass every element to a step of its own.

    ``resumed``: the dead run this one resumes, where it had committed its output
    (:func:`changes_against`)."""

    def __init__(self, config: JobConfig, run_id: str, chain_code: dict[str, str], resumed: str = ""):
        super().__init__()
        self._config = config
        self._run_id = run_id
        self._chain_code = chain_code
        self._resumed = resumed

    def expand(self, reports: dict):
        unknown = set(reports) - set(KINDS)
        if unknown:
            raise ValueError(f"WriteManifest: unknown kinds of report {sorted(unknown)}")
        tagged = [inputs  # no count for an empty PCollection (no default to inject): it adds nothing
                  | f"CountInputs{number}" >> beam.combiners.Count.Globally().without_defaults()
                  | f"TagInputs{number}" >> beam.Map(_tagged(INPUTS))
                  for number, inputs in enumerate(reports[INPUTS])]
        tagged += [reports[kind] | f"Tag{kind.title()}" >> beam.Map(_tagged(kind))
                   for kind in KINDS[1:] if kind in reports]
        return (tagged
                | "FlattenReports" >> beam.Flatten()
                | "CollectReports" >> beam.combiners.ToList()  # [(kind, info)], after every writer
                | "WriteManifestFile" >> beam.FlatMap(_write_manifest, self._config, self._run_id,
                                                          self._chain_code, self._resumed))
