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

import struct
from collections.abc import Mapping, Sequence

_LEN = 2  # wire type of length-delimited fields
_ONE_BYTE = [bytes([value]) for value in range(0x80)]


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


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | _LEN) + _varint(len(payload)) + payload


def _header(number: int, length: int) -> bytes:
    return _varint((number << 3) | _LEN) + _varint(length)


def _feature(values) -> list[bytes]:
    """The chunks of one ``Feature`` message; large byte strings are not copied."""
    if isinstance(values, (bytes, str, int, float)):
        values = [values]
    values = list(values)
    if values and all(isinstance(v, (bytes, str)) for v in values):
        chunks = []
        for value in values:
            data = value.encode("utf-8") if isinstance(value, str) else value
            chunks += (_header(1, len(data)), data)
        return [_header(1, sum(map(len, chunks)))] + chunks
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        packed = b"".join(_varint(v) for v in values)
        return [_field(3, _field(1, packed) if values else b"")]
    if all(isinstance(v, float) for v in values):
        return [_field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))]
    raise TypeError(f"feature values must be all bytes/str, all int or all float, got {values!r:.80}")


def serialize_example(features: Mapping[str, bytes | str | int | float | Sequence]) -> bytes:
    """``{"key": value or [values]}`` -> serialized ``tf.train.Example``.

    Each message is preceded by its length, so the chunks are gathered first and joined
    once: the image bytes are copied a single time, not once per nesting level.
    """
    entries: list[bytes] = []
    for key in sorted(features):
        name = key.encode("utf-8")
        feature = _feature(features[key])
        feature_length = sum(map(len, feature))
        entry = [_header(1, len(name)), name, _header(2, feature_length)] + feature
        entries += [_header(1, sum(map(len, entry)))] + entry
    return b"".join([_header(1, sum(map(len, entries)))] + entries)
