"""An output's files against its manifest: what a reader checks before it trusts them. The
loader checks what it reads whole (the transform graph's files) byte for byte, and that the
manifest lists every file in the graph's folders, and the shards it streams by size; ``verify``
checks every file byte for byte. TensorFlow's file systems only.

A manifest must also agree with itself: each split lists shards of that split, once each, every
one among the manifest's ``files``, and their records add up to the split's ``num_examples``
(:func:`split_problems`); a manifest of a format that lists its files lists them; and what
``verify`` checks besides (:mod:`beam_etl.manifest_checks`).
"""

from __future__ import annotations

import os
import struct

import google_crc32c
import tensorflow as tf

from beam_etl import schema
from beam_etl.tfrecord import masked_crc32c
from beam_etl.manifest_checks import FILES_FORMAT, is_count, lowered_format
from beam_etl.output_layout import TRANSFORM_DIRS, is_local, is_regular, local_path

_CHUNK = 8 << 20  # read 8 MB at a time
LINKED_FOLDER = "a link to a folder, which the job never writes; not followed"


class OutputMismatchError(ValueError):
    """A file of the output is not what its manifest says (size, records or checksum), or the
    manifest contradicts itself."""


def record_spans(data: bytes | bytearray) -> list[tuple[int, int]]:
    """``(offset, size)`` of each framed record in TFRecord ``data`` (8-byte length, 4-byte crc,
    data, 4-byte crc), as its record index lists them; raises ValueError where the framing does
    not end exactly at the end."""
    offset, spans = 0, []
    while offset < len(data):
        if offset + 12 > len(data):
            raise ValueError(f"a record header is cut short at byte {offset}")
        (length,) = struct.unpack_from("<Q", data, offset)
        spans.append((offset, 12 + length + 4))
        offset += 12 + length + 4
    if offset != len(data):
        raise ValueError("the last record is cut short")
    return spans


def count_records(data: bytes | bytearray) -> int:
    """Records in TFRecord ``data``, from its framing (:func:`record_spans`)."""
    return len(record_spans(data))


def check_file(path: str, entry: dict, read_back=None) -> str | None:
    """What is wrong with ``path`` against its manifest ``entry``; None if nothing. Only a
    regular file is opened (a FIFO would block the reader for ever). ``read_back(data)``: what
    else is wrong with the bytes of a counted file (a shard, a file of a line per record) that
    matched its entry."""
    if not tf.io.gfile.exists(path):
        return "missing"
    if tf.io.gfile.isdir(path):
        return "a folder, not a file"
    if is_local(path) and not is_regular(path):
        return "not a regular file; not opened"
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
    counted = "num_examples" in entry or "num_records" in entry
    return read_back(data) if read_back is not None and counted else None


def first_record(path: str, size: int) -> bytes | None:
    """The first record of the TFRecord file ``path``, of ``size`` bytes (None: it is empty).
    Its framing is checked before its length is trusted (a length read from flipped bits can
    ask for terabytes): ValueError where the length's or the data's checksum does not match,
    or the record runs past the file's end."""
    if size == 0:
        return None
    with tf.io.gfile.GFile(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12:
            raise ValueError("its first record's header is cut short")
        (length,) = struct.unpack_from("<Q", header)
        if struct.unpack_from("<I", header, 8)[0] != masked_crc32c(header[:8]):
            raise ValueError("its first record's length does not match its checksum (a corrupt shard)")
        if 12 + length + 4 > size:
            raise ValueError("its first record runs past the file's end")
        data = handle.read(length)
        footer = handle.read(4)
    if len(data) != length or len(footer) != 4 or struct.unpack("<I", footer)[0] != masked_crc32c(data):
        raise ValueError("its first record does not match its checksum (a corrupt shard)")
    return data


def record_problem(record: bytes, image_info: dict) -> str | None:
    """Where the record says otherwise than the manifest's ``image`` of its pixels (size,
    channels, encodings of image and mask), which the loader decodes every record by; None where
    it agrees."""
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel

    try:
        features = example_pb2.Example.FromString(record).features.feature
    except Exception as error:  # pylint: disable=broad-except  # (protobuf's DecodeError, of no stable module)
        return f"its first record is not a tf.train.Example: {error}"

    def one(key, kind):
        values = getattr(features[key], kind).value if key in features else []
        return values[0] if len(values) == 1 else None

    height, width = one(schema.IMAGE_HEIGHT, "int64_list"), one(schema.IMAGE_WIDTH, "int64_list")
    if (height, width) != (image_info.get("height"), image_info.get("width")):
        return (f"its first record is {height}x{width}, the manifest's image says "
                f"{image_info.get('height')}x{image_info.get('width')}")
    channels = one(schema.IMAGE_CHANNELS, "int64_list")
    if channels != image_info.get("channels"):
        return f"its first record has {channels} channels, the manifest's image says {image_info.get('channels')}"
    encoding = one(schema.IMAGE_FORMAT, "bytes_list")
    if encoding is None or encoding.decode("utf-8", "replace") != image_info.get("format"):
        return f"its first record is of format {encoding!r}, the manifest's image says {image_info.get('format')!r}"
    encoding = one(schema.MASK_FORMAT, "bytes_list")
    if encoding is None or encoding.decode("utf-8", "replace") != image_info.get("mask_format"):
        return (f"its first record's mask is of format {encoding!r}, the manifest's image.mask_format says "
                f"{image_info.get('mask_format')!r}")
    return None


def lists_files(manifest: dict) -> bool:
    """Whether ``manifest`` lists its files; raises OutputMismatchError when its format says it
    must and it does not (deleting the list would turn every check off)."""
    if "files" in manifest:
        return True
    if not is_count(manifest.get("format_version", 1)):
        raise OutputMismatchError("the manifest's 'format_version' is not a count: it was edited")
    if manifest.get("format_version", 1) >= FILES_FORMAT:
        raise OutputMismatchError(f"the manifest (format_version {manifest.get('format_version')}) lists no "
                                  "files, though its format lists every one: it was edited")
    lowered = lowered_format({"format_version": 1, **manifest})
    if lowered:
        raise OutputMismatchError(f"the manifest lists no files, and {lowered[0]}: it was edited")
    return False


def walk(data_dir: str, folder: str = "") -> tuple[list[str], list[str]]:
    """``(files, links)``: every file under ``data_dir`` (or its ``folder``), relative to
    ``data_dir``, and every folder there that is a link, which is not followed (a link looping
    back would list the output again and again; the job writes no link, so it is told, and the
    files behind it are not passed over unseen)."""
    root = data_dir.rstrip("/")
    top = f"{root}/{folder}" if folder else root
    if folder and is_local(root) and os.path.islink(local_path(top)):
        return [], [folder]
    names, links = [], []
    for directory, folders, files in tf.io.gfile.walk(top):  # (nothing where ``top`` is not there)
        relative = directory[len(root):].strip("/")
        if is_local(root):
            linked = [name for name in folders if os.path.islink(os.path.join(local_path(directory), name))]
            links += [f"{relative}/{name}" if relative else name for name in linked]
            folders[:] = [name for name in folders if name not in linked]
        names += [f"{relative}/{name}" if relative else name for name in files]
    return names, links


def check_graph_files(data_dir: str, manifest: dict) -> None:
    """Checks the transform graph's files (read whole by whoever loads the graph) byte for byte
    against the manifest, and that the manifest lists every file in the graph's folders (whoever
    loads the graph reads what is there: an asset dropped from the list could be changed at
    will); raises OutputMismatchError naming the first that differs, is not listed, or is a
    folder's link (whose files would be read unchecked)."""
    if not lists_files(manifest):
        return
    for name, entry in sorted(manifest["files"].items()):
        if name.split("/", 1)[0] in TRANSFORM_DIRS:
            problem = check_file(f"{data_dir.rstrip('/')}/{name}", entry)
            if problem:
                raise OutputMismatchError(f"{data_dir.rstrip('/')}/{name}: {problem}: the transform graph is not the "
                                          "one the manifest describes")
    for folder in TRANSFORM_DIRS:
        names, links = walk(data_dir, folder)
        problems = [(name, LINKED_FOLDER) for name in links]
        problems += [(name, "not listed in the manifest") for name in names if name not in manifest["files"]]
        if problems:
            name, problem = min(problems)
            raise OutputMismatchError(f"{data_dir.rstrip('/')}/{name}: {problem}: the transform graph is not the "
                                      "one the manifest describes")
