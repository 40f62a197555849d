"""``OUTPUT/manifest.json``: what the job wrote, and the mark that the output is complete.

The manifest is written last, by a step that waits for every shard and the rejected list to
be in place; a run that fails leaves none, and :func:`read_manifest` refuses a directory
without one. It is also where readers find the file list and the feature schema.
"""

from __future__ import annotations

import json
import platform

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

import beam_etl
from beam_etl import schema, sink, statistics
from beam_etl.config import JobConfig

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class IncompleteOutputError(FileNotFoundError):
    """The directory has no manifest: the job did not finish, or it is not beam-etl output."""


def missing_manifest(path: str, output_dir: str) -> IncompleteOutputError:
    return IncompleteOutputError(
        f"{path} does not exist: {output_dir} is not a complete beam-etl output "
        "(the job did not finish, or wrote elsewhere)")


def read_manifest(output_dir: str) -> dict:
    path = sink.join(output_dir, MANIFEST)
    if not FileSystems.exists(path):
        raise missing_manifest(path, output_dir)
    with FileSystems.open(path) as handle:
        return json.loads(handle.read().decode("utf-8"))


def build_manifest(config: JobConfig, parts: list[tuple[str, object]]) -> dict:
    """Assembles the manifest from the writers' reports; raises if any input is unaccounted for."""
    shards = sorted((info for kind, info in parts if kind == "shard"), key=lambda i: i["file"])
    (rejected,) = [info for kind, info in parts if kind == "rejected"]
    num_inputs = sum(count for kind, count in parts if kind == "inputs")
    splits = {}
    for split in config.splits:
        files = [info for info in shards if info["split"] == split]
        splits[split] = {
            "num_examples": sum(info["num_examples"] for info in files),
            "num_source_examples": sum(info["num_source_examples"] for info in files),
            "bytes": sum(info["bytes"] for info in files),
            "files": [info["file"] for info in files],
        }
    written = sum(split["num_source_examples"] for split in splits.values())
    if written + rejected["num_rejected"] != num_inputs:
        raise RuntimeError(
            f"inputs are unaccounted for: {num_inputs} inputs but {written} written + "
            f"{rejected['num_rejected']} rejected")
    return {
        "format_version": FORMAT_VERSION,
        "num_inputs": num_inputs,
        "num_written": written,
        "num_rejected": rejected["num_rejected"],
        "num_examples": sum(split["num_examples"] for split in splits.values()),
        "rejected": rejected,
        "splits": splits,
        "image": config.image_info(),
        "features": schema.describe(),
        # Full-pass statistics of the training split (beam_etl.statistics); None with --no_statistics.
        "statistics": next((info for kind, info in parts if kind == "statistics"), None),
        "flags": config.flags(),
        "versions": {"beam_etl": beam_etl.__version__, "apache_beam": beam.__version__,
                     "python": platform.python_version()},
    }


def check_reject_fraction(config: JobConfig, manifest: dict) -> None:
    fraction = manifest["num_rejected"] / max(1, manifest["num_inputs"])
    if fraction > config.max_reject_fraction:
        raise RuntimeError(
            f"{manifest['num_rejected']} of {manifest['num_inputs']} inputs rejected "
            f"({fraction:.1%}) is above --max_reject_fraction={config.max_reject_fraction}; "
            f"see {sink.join(config.output, sink.REJECTED_FILE)}. No manifest was written.")


def _write_manifest(parts, config: JobConfig):
    manifest = build_manifest(config, parts)
    check_reject_fraction(config, manifest)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    sink.write_atomically(config.output, MANIFEST, [text.encode("utf-8")])
    sink.remove_incomplete(config.output)
    yield manifest


class WriteManifest(beam.PTransform):
    """Takes ``(kind, info)`` reports (``shard``, ``rejected``, ``inputs``) and writes the manifest
    once all have arrived; yields the manifest dict."""

    def __init__(self, config: JobConfig):
        super().__init__()
        self._config = config

    def expand(self, reports):
        return (reports
                | "CollectReports" >> beam.combiners.ToList()  # [(kind, info)], after every writer
                | "WriteManifestFile" >> beam.FlatMap(_write_manifest, self._config))


def prepare_output(config: JobConfig) -> None:
    """Launch-time: refuse to mix with an earlier run, or clear it with --overwrite.

    The manifest goes first, so a run that dies mid-way never leaves the old one standing.
    """
    manifest_path = sink.join(config.output, MANIFEST)
    has_manifest = FileSystems.exists(manifest_path)
    earlier = FileSystems.match([sink.join(config.output, "*.tfrecord")])[0].metadata_list
    if not (earlier or has_manifest):
        return
    if not config.overwrite:
        raise ValueError(f"--output {config.output!r} already holds a run's output; "
                         "pass --overwrite to replace it")
    paths = [manifest_path] if has_manifest else []
    FileSystems.delete(paths + [metadata.path for metadata in earlier])
    for name in (sink.REJECTED_DIR, sink.INCOMPLETE_DIR, *statistics.TRANSFORM_DIRS):
        sink.delete_tree(sink.join(config.output, name))
