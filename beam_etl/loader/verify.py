"""Checks an output against its manifest: every file there, its size, crc32c and record count,
and no file of the job's that the manifest does not list. Needs TensorFlow's file systems only.

    python -m beam_etl.loader.verify OUT        # prints a verdict; exit status 0 if the output is intact
"""

from __future__ import annotations

import argparse
import struct
import sys

import google_crc32c
import tensorflow as tf

from beam_etl.loader.dataset import load_manifest
from beam_etl.output_layout import INCOMPLETE_DIR, MANIFEST, first_format, is_job_file

_CHUNK = 8 << 20  # read 8 MB at a time


def _walk(data_dir: str) -> list[str]:
    root = data_dir.rstrip("/")
    names = []
    for directory, _, files in tf.io.gfile.walk(root):
        relative = directory[len(root):].strip("/")
        names += [f"{relative}/{name}" if relative else name for name in files]
    return names


def count_records(data: bytes | bytearray) -> int:
    """Records in TFRecord ``data``, from its framing (8-byte length, 4-byte crc, data, 4-byte
    crc); raises ValueError where the framing does not end exactly at the end."""
    offset, count = 0, 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"a record header is cut short at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        offset += 12 + length + 4
        count += 1
    if offset != len(data):
        raise ValueError("the last record is cut short")
    return count


def check_file(path: str, entry: dict) -> str | None:
    """What is wrong with ``path`` against its manifest ``entry``; None if nothing."""
    if not tf.io.gfile.exists(path):
        return "missing"
    checksum = google_crc32c.Checksum()
    data = bytearray()  # a shard's bytes, for its framing (shards are --shard_size_mb at most)
    size = 0
    with tf.io.gfile.GFile(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            checksum.update(chunk)
            size += len(chunk)
            if "num_examples" in entry or "num_records" in entry:
                data += chunk
    if size != entry["bytes"]:
        return f"{size} bytes, the manifest lists {entry['bytes']}"
    if checksum.hexdigest().decode("ascii") != entry["crc32c"]:
        return f"crc32c {checksum.hexdigest().decode('ascii')}, the manifest lists {entry['crc32c']}"
    if "num_examples" in entry:
        try:
            records = count_records(data)
        except ValueError as error:
            return f"corrupt framing: {error}"
        if records != entry["num_examples"]:
            return f"{records} records, the manifest lists {entry['num_examples']}"
    if "num_records" in entry:  # line-per-record files: the rejected list, a shard's index
        lines = data.count(b"\n")
        if lines != entry["num_records"] or (data and not data.endswith(b"\n")):
            return f"{lines} lines, the manifest lists {entry['num_records']} records"
    return None


def verify(data_dir: str) -> dict[str, str]:
    """``{name: problem}`` for every file that does not match the manifest (empty: intact)."""
    path = f"{data_dir.rstrip('/')}/{MANIFEST}"
    manifest = load_manifest(data_dir)
    if "files" not in manifest:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')}, which lists "
                         "no checksums: rerun the job to verify its output")
    problems = {}
    for name, entry in sorted(manifest["files"].items()):
        problem = check_file(f"{data_dir.rstrip('/')}/{name}", entry)
        if problem:
            problems[name] = problem
    for name in _walk(data_dir):
        if (is_job_file(name) and name != MANIFEST and name not in manifest["files"]
                and not name.startswith(INCOMPLETE_DIR + "/")
                and manifest.get("format_version", 0) >= first_format(name)):
            problems[name] = "not listed in the manifest"
    return problems


def main(argv: list[str] | None = None, prog: str = "python -m beam_etl.loader.verify") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("output", metavar="OUT", help="Output folder of the job (local or gs://).")
    parser.add_argument("--verbose", action="store_true", help="Show TensorFlow's native logs.")
    args = parser.parse_args(argv)
    try:
        problems = verify(args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if problems:
        for name, problem in problems.items():
            print(f"FAIL {args.output.rstrip('/')}/{name}: {problem}")
        print(f"{args.output}: {len(problems)} file(s) do not match the manifest")
        return 1
    print(f"{args.output}: every file matches the manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
