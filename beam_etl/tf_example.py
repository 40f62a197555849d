"""Serializes ``tf.train.Example`` protos without importing TensorFlow.

Importing TensorFlow costs seconds and hundreds of MB in every worker process, for what is,
on the wire, a handful of nested length-delimited fields. This module writes exactly the
bytes ``tf.train.Example.SerializeToString(deterministic=True)`` gives (map entries sorted by
key), which the tests check against TensorFlow itself.

    message Example  { Features features = 1; }
    message Features { map<string, Feature> feature = 1; }
    message Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                                    Int64List int64_list = 3; } }
    message BytesList { repeated bytes value = 1; }
    message Int64List { repeated int64 value = 1 [packed = true]; }
    message FloatList { repeated float value = 1 [packed = true]; }
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence

_ONE_BYTE = [bytes([value]) for value in range(0x80)]
_TAG_1 = b"\x0a"  # field 1, length-delimited: Example.features, Features.feature, entry key, list values
_TAG_2 = b"\x12"  # field 2, length-delimited: entry value, Feature.float_list
_TAG_3 = b"\x1a"  # field 3, length-delimited: Feature.int64_list


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]  # tags and most lengths: no loop, no allocation
    if value < 0:
        value += 1 << 64  # int64 is sent as its two's complement, ten bytes long
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_prefixed(tag: bytes, length: int) -> bytes:
    return tag + _varint(length)


def _bytes_list(values) -> tuple[list[bytes], int]:
    """A ``BytesList``'s chunks and their total length; large byte strings are not copied."""
    chunks, length = [], 0
    for value in values:
        data = value.encode("utf-8") if isinstance(value, str) else value
        header = _length_prefixed(_TAG_1, len(data))
        chunks += (header, data)
        length += len(header) + len(data)
    return chunks, length


def _feature(values) -> tuple[list[bytes], int]:
    """The chunks of one ``Feature`` message and their total length."""
    if isinstance(values, (bytes, str)):  # the common case: one string (an image, a name)
        values = (values,)
    elif isinstance(values, (int, float)):
        values = [values]
    else:
        values = list(values)
    if values and all(isinstance(v, (bytes, str)) for v in values):
        chunks, length = _bytes_list(values)
        header = _length_prefixed(_TAG_1, length)
        return [header] + chunks, len(header) + length
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        packed = b"".join(_varint(v) for v in values)
        tag, payload = _TAG_3, _length_prefixed(_TAG_1, len(packed)) + packed if values else b""
    elif all(isinstance(v, float) for v in values):
        packed = struct.pack(f"<{len(values)}f", *values)
        tag, payload = _TAG_2, _length_prefixed(_TAG_1, len(packed)) + packed
    else:
        raise TypeError(f"feature values must be all bytes/str, all int or all float, got {values!r:.80}")
    data = _length_prefixed(tag, len(payload)) + payload
    return [data], len(data)


def _entry(key: str, values) -> list[bytes]:
    """One ``feature`` map entry of ``Features``, with its length prefix, as chunks."""
    feature, feature_length = _feature(values)
    name = key.encode("utf-8")
    key_field = _length_prefixed(_TAG_1, len(name)) + name
    value_header = _length_prefixed(_TAG_2, feature_length)
    entry_length = len(key_field) + len(value_header) + feature_length
    return [_length_prefixed(_TAG_1, entry_length) + key_field + value_header] + feature


@functools.lru_cache(maxsize=4096, typed=True)
def _scalar_entry(key: str, value: int | str) -> bytes:
    """The entry of one int or string: formats, sizes, labels and class names repeat from
    record to record, so their bytes are made once."""
    return b"".join(_entry(key, value))


def serialize_example(features: Mapping[str, bytes | str | int | float | Sequence]) -> bytes:
    """``{"key": value or [values]}`` -> serialized ``tf.train.Example``.

    Each message is preceded by its length, so the chunks are gathered first and joined
    once: the image bytes are copied a single time, not once per nesting level. This runs for
    every record the job writes, so the entries of repeated scalars come from a cache.
    """
    chunks: list[bytes] = []
    for key in sorted(features):
        value = features[key]
        if type(value) in (int, str):  # pylint: disable=unidiomatic-typecheck  # not bool
            chunks.append(_scalar_entry(key, value))
        else:
            chunks += _entry(key, value)
    total = sum(map(len, chunks))
    return b"".join([_length_prefixed(_TAG_1, total)] + chunks)
