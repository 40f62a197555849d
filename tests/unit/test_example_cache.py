"""Cache entries: what goes in comes out, and a damaged entry is never taken for an outcome."""

import dataclasses
import importlib.metadata
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import PIL
import pytest

from beam_etl.beam import example_cache
from beam_etl.config import JobConfig
from beam_etl.elements import EncodedExample, RejectedInput, SourceRecord
from beam_etl.image.pixel_statistics import ExampleSums

OUTCOMES = [
    example_cache.Outcome(
        examples=(EncodedExample("a", "train", 0, b"\x00record one\n"), EncodedExample("a#aug1", "train", 1, b"")),
        sums=ExampleSums((1, 2, 3), (4, 5, 6), (1, 3), (10, 6), "pug")),
    example_cache.Outcome(examples=(EncodedExample("b", "val", 0, b"x" * 5000),)),
    example_cache.Outcome(rejected=RejectedInput("decode_image", "truncated", "ends after 12 bytes: é")),
]
D = example_cache.digest
ROOT = str(pathlib.Path(__file__).resolve().parents[2])
N = "ab" * 32  # an entry's name


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_an_entry_gives_back_its_outcome(outcome):
    back = example_cache.decode(N, example_cache.encode(N, outcome))
    assert back.examples == outcome.examples and back.sums == outcome.sums
    assert (back.rejected is None) == (outcome.rejected is None)
    if outcome.rejected is not None:
        assert (back.rejected.stage, back.rejected.reason, back.rejected.message) == \
            (outcome.rejected.stage, outcome.rejected.reason, outcome.rejected.message)


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_damaged_entry_is_no_outcome(outcome):
    data = example_cache.encode(N, outcome)
    for damaged in (data[:-1], data + b"x", b"", data[:len(example_cache.MAGIC)], b"X" + data[1:],
                    *(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] for i in range(0, len(data), 7))):
        assert example_cache.decode(N, damaged) is None
    assert example_cache.decode("cd" * 32, data) is None  # intact, but another entry's


def _names(count):
    return [D(str(i).encode()) for i in range(count)]


def test_entries_in_segments_come_back_from_a_fresh_reader(tmp_path):
    writers = [example_cache.ExampleCache(str(tmp_path)) for _ in range(2)]
    names = _names(6)
    for i, name in enumerate(names):  # two writers, each its own segment
        writers[i % 2].write(name, OUTCOMES[i % 3])
    for writer in writers:
        writer.finish_bundle()
        writer.close()
    segments = sorted(p.name for p in (tmp_path / example_cache.SEGMENTS).iterdir())
    assert len(segments) == 4 and {p.rsplit(".", 1)[1] for p in segments} == {"seg", "idx"}
    reader = example_cache.ExampleCache(str(tmp_path))
    assert sorted(reader.entries()) == sorted(names)
    for i, name in enumerate(names):
        outcome, damaged = reader.read(name)
        assert not damaged and outcome.examples == OUTCOMES[i % 3].examples and outcome.sums == OUTCOMES[i % 3].sums
    assert reader.read(D(b"never written")) == (None, False)
    reader.close()


def test_a_cut_index_line_a_cut_segment_and_a_misplaced_line(tmp_path):
    """What a writer killed mid-write, or a damaged index, leaves: never taken for an outcome."""
    cache = example_cache.ExampleCache(str(tmp_path))
    names = _names(4)
    for name in names:
        cache.write(name, OUTCOMES[1])
    cache.close()
    (index,) = (tmp_path / example_cache.SEGMENTS).glob("*.idx")
    segment = index.with_suffix(".seg")
    lines = index.read_text().splitlines(keepends=True)
    ((_, location),) = example_cache.read_index(lines[3], str(segment))
    os.truncate(segment, location.offset + location.length - 7)  # the last entry cut short
    misplaced = lines[1].replace(names[1], names[2])  # names[2] pointing at names[1]'s bytes
    index.write_text(lines[0] + misplaced + lines[3] + lines[1][:30])  # and a line cut short
    reader = example_cache.ExampleCache(str(tmp_path))
    assert reader.read(names[0])[0].examples == OUTCOMES[1].examples
    assert reader.read(names[2]) == (None, True)
    assert reader.read(names[3]) == (None, True)
    assert reader.read(names[1]) == (None, False)  # its line was cut: not listed
    reader.write(names[3], OUTCOMES[0])  # computed again: a later entry of the same name
    reader.close()
    again = example_cache.ExampleCache(str(tmp_path))
    assert again.read(names[3])[0].examples == OUTCOMES[0].examples and len(again.entries()[names[3]]) == 2
    again.close()


def test_a_local_writer_leaves_each_entry_readable_at_once(tmp_path):
    """Appended and flushed per entry: a run killed after it keeps it (nothing waits on close)."""
    writer = example_cache.ExampleCache(str(tmp_path))
    name = _names(1)[0]
    writer.write(name, OUTCOMES[0])
    assert example_cache.ExampleCache(str(tmp_path)).read(name)[0].sums == OUTCOMES[0].sums
    writer.close()


def test_the_name_changes_with_what_shapes_the_outcome_only():
    record = SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=3, label_name="pug", split="train")
    version = "v"
    name = example_cache.entry_name(version, record, D(b"image"), D(b"mask"))
    assert example_cache.entry_name(version, record, D(b"image"), D(b"mask")) == name
    others = [example_cache.entry_name("w", record, D(b"image"), D(b"mask")),
              example_cache.entry_name(version, record, D(b"image"), D(b"mask!")),
              example_cache.entry_name(version, record, D(b"image!"), D(b"mask"))]
    for field, value in [("key", "b"), ("image_uri", "/e/a.jpg"), ("mask_uri", None), ("label", 4),
                         ("label_name", "Pug"), ("split", "val")]:
        others.append(example_cache.entry_name(version, dataclasses.replace(record, **{field: value}), D(b"image"), D(b"mask")))
    assert name not in others and len(set(others)) == len(others)


@dataclasses.dataclass(frozen=True)
class _Inputs:
    def splits(self, config):
        del config
        return ()


def test_the_version_changes_with_the_settings_that_shape_an_example_only():
    base = JobConfig(output="o", sources=(_Inputs(),))
    version = example_cache.version(base)
    for change in ({"output": "p"}, {"num_shards": 3}, {"shard_size_mb": 5.0}, {"overwrite": True},
                   {"split_fractions": (("train", 1.0),)}, {"max_reject_fraction": 0.5}, {"cache_dir": "c"}):
        assert example_cache.version(dataclasses.replace(base, **change)) == version, change
    for change in ({"image_size": (64, 64)}, {"image_format": "png"}, {"jpeg_quality": 90}, {"max_pixels": 10},
                   {"mask_values": (1, 2)}, {"augment_copies": 1}, {"seed": 1}, {"statistics": False}):
        assert example_cache.version(dataclasses.replace(base, **change)) != version, change


def test_the_version_changes_with_a_library_of_the_chain():
    libraries = example_cache.library_versions()
    assert libraries["PIL"] == PIL.__version__ == importlib.metadata.version("pillow")
    assert libraries["numpy"] == np.__version__ and libraries["cv2"] == cv2.__version__
    assert set(libraries) == set(example_cache.CHAIN_LIBRARIES)
    base = JobConfig(output="o", sources=(_Inputs(),))
    assert example_cache.version(base, libraries=dict(libraries)) == example_cache.version(base)
    for name in example_cache.CHAIN_LIBRARIES:  # an upgrade of any one of them is a new chain
        assert example_cache.version(base, libraries={**libraries, name: "0.0.1"}) != example_cache.version(base)


def test_a_name_written_twice_in_one_segment_keeps_both_places(tmp_path):
    """A retried bundle writes an entry again: were the later copy cut, the earlier one serves."""
    cache = example_cache.ExampleCache(str(tmp_path))
    name = _names(1)[0]
    cache.write(name, OUTCOMES[0])
    cache.write(name, OUTCOMES[0])
    cache.close()
    (index,) = (tmp_path / example_cache.SEGMENTS).glob("*.idx")
    segment = index.with_suffix(".seg")
    os.truncate(segment, segment.stat().st_size - 3)
    reader = example_cache.ExampleCache(str(tmp_path))
    assert len(reader.entries()[name]) == 2 and reader.read(name)[0].sums == OUTCOMES[0].sums


def test_an_index_is_read_on_from_where_this_process_left_it(tmp_path):
    """Each instance of the step reads the indexes (Beam's Dask runner sets one up per
    partition): what this process read before is not read again, a line being written is left
    for later, and a segment that is gone holds no entry."""
    names = _names(5)
    writer = example_cache.ExampleCache(str(tmp_path))
    for name in names[:2]:
        writer.write(name, OUTCOMES[1])
    assert sorted(example_cache.ExampleCache(str(tmp_path)).entries()) == sorted(names[:2])
    writer.write(names[2], OUTCOMES[1])
    (index,) = (tmp_path / example_cache.SEGMENTS).glob("*.idx")
    line = index.read_text().splitlines(keepends=True)[2]
    with open(index, "a", encoding="ascii") as handle:  # another writer's line, half written
        handle.write(line.replace(names[2], names[3])[:40])
    assert sorted(example_cache.ExampleCache(str(tmp_path)).entries()) == sorted(names[:3])
    with open(index, "a", encoding="ascii") as handle:
        handle.write(line.replace(names[2], names[3])[40:])
    reader = example_cache.ExampleCache(str(tmp_path))
    entries = reader.entries()
    assert sorted(entries) == sorted(names[:4]) and all(len(places) == 1 for places in entries.values())
    assert reader.read(names[3]) == (None, True)  # its line points at names[2]'s bytes
    writer.close()
    index.with_suffix(".seg").unlink()
    assert example_cache.ExampleCache(str(tmp_path)).read(names[0]) == (None, False)
    other = example_cache.ExampleCache(str(tmp_path / "elsewhere"))
    assert other.entries() == {} and other.read(names[0]) == (None, False)


def test_a_failed_write_starts_a_new_segment(tmp_path):
    """A write the disk refuses (here: past the file size limit) fails the bundle; the writer's
    next entries go to a new segment, where the index says they are."""
    script = f"""
import resource, signal
from beam_etl.beam import example_cache
from tests.unit.test_example_cache import OUTCOMES, _names
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
cache = example_cache.ExampleCache({str(tmp_path)!r})
names = _names(3)
cache.write(names[0], OUTCOMES[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, hard))
try:
    cache.write(names[1], OUTCOMES[1])
except OSError as error:
    print("refused", error.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
cache.write(names[2], OUTCOMES[1])
cache.close()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("refused")
    reader = example_cache.ExampleCache(str(tmp_path))
    names = _names(3)
    assert reader.read(names[0])[0].examples == reader.read(names[2])[0].examples == OUTCOMES[1].examples
    assert len(list((tmp_path / example_cache.SEGMENTS).glob("*.seg"))) == 2
