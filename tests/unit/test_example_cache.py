"""Cache entries: what goes in comes out, and a damaged entry is never taken for an outcome."""

import ast
import dataclasses
import importlib.metadata
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import PIL
import pytest

from beam_etl import code_version
from beam_etl.beam import example_cache
from beam_etl.image import chain
from beam_etl.config import ChainSettings, JobConfig
from beam_etl.elements import EncodedExample, RejectedInput, SourceRecord
from beam_etl.image.pixel_statistics import ExampleSums

OUTCOMES = [
    example_cache.Outcome(
        examples=(EncodedExample("a", "train", 0, b"\x00record one\n"), EncodedExample("a#aug1", "train", 1, b"")),
        sums=ExampleSums((1, 2, 3), (4, 5, 6), (1, 3), (10, 6), "pug")),
    example_cache.Outcome(examples=(EncodedExample("b", "val", 0, b"x" * 5000),)),
    example_cache.Outcome(rejected=RejectedInput("decode_image", "truncated", "ends after 12 bytes: é")),
    example_cache.Outcome(rejected=RejectedInput("validate", "mask_values", "mask holds [7]", of_mask=True)),
]
D = example_cache.digest
N = "ab" * 32  # an entry's name


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_an_entry_gives_back_its_outcome(outcome):
    back = example_cache.decode(N, example_cache.encode(N, outcome))
    assert back.examples == outcome.examples and back.sums == outcome.sums
    assert (back.rejected is None) == (outcome.rejected is None)
    if outcome.rejected is not None:
        assert (back.rejected.stage, back.rejected.reason, back.rejected.message, back.rejected.of_mask) == \
            (outcome.rejected.stage, outcome.rejected.reason, outcome.rejected.message, outcome.rejected.of_mask)


@pytest.mark.parametrize("outcome", OUTCOMES)
def test_a_damaged_entry_is_no_outcome(outcome):
    data = example_cache.encode(N, outcome)
    for damaged in (data[:-1], data + b"x", b"", data[:len(example_cache.MAGIC)], b"X" + data[1:],
                    *(data[:i] + bytes([data[i] ^ 1]) + data[i + 1:] for i in range(0, len(data), 7))):
        assert example_cache.decode(N, damaged) is None
    assert example_cache.decode("cd" * 32, data) is None  # intact, but another entry's


def test_the_name_changes_with_what_shapes_the_outcome_only():
    record = SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=3, label_name="pug", split="train")
    version = "v"
    name = example_cache.entry_name(version, record, D(b"image"), D(b"mask"))
    assert example_cache.entry_name(version, record, D(b"image"), D(b"mask")) == name
    others = [example_cache.entry_name("w", record, D(b"image"), D(b"mask")),
              example_cache.entry_name(version, record, D(b"image"), D(b"mask!")),
              example_cache.entry_name(version, record, D(b"image!"), D(b"mask"))]
    # Every field of a record but the bytes it may carry (named by their digests), a field
    # added later included: each changes the name.
    fields = [field.name for field in dataclasses.fields(SourceRecord) if not field.name.endswith("_bytes")]
    assert {"key", "image_uri", "mask_uri", "label", "label_name", "split"} <= set(fields)
    for field in fields:
        value = getattr(record, field)
        other = value + 1 if isinstance(value, int) else f"{value}!"
        others.append(example_cache.entry_name(version, dataclasses.replace(record, **{field: other}),
                                               D(b"image"), D(b"mask")))
    assert name not in others and len(set(others)) == len(others)
    # A field a newcomer adds to the record is in the name without a word in entry_name.
    wider = dataclasses.make_dataclass("WiderRecord", [("crop_box", str, "")], bases=(SourceRecord,), frozen=True)
    widened = [example_cache.entry_name(version, wider(**dataclasses.asdict(record), crop_box=box), D(b"image"),
                                        D(b"mask")) for box in ("", "0,0,8,8")]
    assert widened[0] != widened[1]
    # The bytes a record carries are named by the digests given with them, not twice.
    carrying = dataclasses.replace(record, image_bytes=b"image", mask_bytes=b"mask")
    assert example_cache.entry_name(version, carrying, D(b"image"), D(b"mask")) == name


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


def test_the_chain_is_given_only_the_settings_its_outcomes_are_named_by():
    """A setting the chain reads is one the cache's names hash: the chain refuses the whole
    config, and every field of what it is given changes the version."""
    record = SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", label=3, label_name="pug", split="train")
    config = JobConfig(output="o", sources=(_Inputs(),))
    with pytest.raises(TypeError, match="the chain takes ChainSettings"):
        chain.process_example(record, b"", b"", "train", config)
    job_fields = {field.name: field for field in dataclasses.fields(JobConfig)}
    changed = {"image_size": (64, 64), "image_format": "png", "resize": "pad", "jpeg_quality": 90,
               "max_pixels": 10, "mask_values": (1, 2), "augment_copies": 1, "seed": 1, "statistics": False}
    assert set(changed) == {field.name for field in dataclasses.fields(ChainSettings)}
    assert set(changed) <= set(job_fields)
    version = example_cache.version(config)
    for name, value in changed.items():
        assert example_cache.version(dataclasses.replace(config, **{name: value})) != version, name


def test_outcomes_of_other_splits_do_not_change_with_training_only_settings():
    config = JobConfig(output="o", sources=(_Inputs(),))
    for split in ("val", "test"):
        version = example_cache.version(config, split)
        for change in ({"augment_copies": 2}, {"seed": 7}, {"statistics": False}):
            assert example_cache.version(dataclasses.replace(config, **change), split) == version, change
        assert example_cache.version(dataclasses.replace(config, image_size=(64, 64)), split) != version
        assert config.chain_settings(split).augment_copies == 0 and not config.chain_settings(split).statistics
    assert config.chain_settings("train") == ChainSettings(**{
        field.name: getattr(config, field.name) for field in dataclasses.fields(ChainSettings)})


def test_an_outcome_is_named_and_made_with_the_same_settings():
    config = JobConfig(output="o", sources=(_Inputs(),), augment_copies=2, seed=3)
    for split in ("train", "val"):
        made = example_cache.Chain.of(config, split)
        assert made.settings == config.chain_settings(split)
        assert made.version == example_cache.version(config, split)
    record = SourceRecord(key="a", image_uri="/d/a.jpg", mask_uri="/d/a.png", split="val")
    with pytest.raises(ValueError, match="'a' is an input of 'val', not of 'train'"):
        example_cache.Chain.of(config, "train").compute(record, b"", b"")


def test_the_version_a_run_starts_with_is_of_the_files_as_they_were_then():
    """The digests are taken as the command starts; the chain's modules are picked among them
    later: a file edited meanwhile keeps its first digest (the workers then find it changed)."""
    from beam_etl.beam import up_to_date  # pylint: disable=import-outside-toplevel

    sources = up_to_date.source_digests()
    chain = code_version.closure(code_version.CHAIN_ENTRIES)
    assert {code_version.source_file(name) for name in chain} <= set(sources)
    resizing = code_version.source_file("beam_etl.image.resizing")
    started = up_to_date.StartingCode({**sources, resizing: b"\x00" * 32})
    assert started.chain["beam_etl.image.resizing"] == "00" * 32
    assert code_version.changed(started.chain) == ["beam_etl.image.resizing"]
    assert up_to_date.StartingCode(sources).chain == code_version.chain_version()


def test_every_module_of_the_job_the_chain_loads_is_in_its_version():
    """What the closure reads from the source against what Python loads: a module imported by a
    name in a string (importlib) would be missing from the version."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, beam_etl.image.chain, beam_etl.beam.example_cache; "
         "print(' '.join(name for name in sys.modules if name.split('.')[0] == 'beam_etl'))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "beam_etl.image.resizing" in loaded
    assert set(loaded) <= set(code_version.closure(code_version.CHAIN_ENTRIES))


# Libraries the chain's modules import that make no byte of an outcome, each for its reason.
_NOT_SHAPING_OUTCOMES = {
    "google_crc32c": "the checksums of the cache's entries and of lineage lines",
    "tensorflow": "beam_etl.schema's record readers, which the chain never calls",
}


def test_every_library_the_chain_imports_is_versioned_or_said_to_shape_nothing():
    """A library added to the chain (a new decoder) must be among CHAIN_LIBRARIES, whose
    versions name outcomes; and nothing but the settings and the bytes shapes one: no module of
    the chain reads the environment."""
    libraries, environment = set(), []
    for name in code_version.closure(code_version.CHAIN_ENTRIES):
        path = code_version.source_file(name)
        for imported in code_version.imports(path, name):
            top = imported.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("__future__", "beam_etl"):
                libraries.add(top)
        tree = ast.parse(pathlib.Path(path).read_text())
        environment += [f"{name}:{node.lineno}" for node in ast.walk(tree)
                        if isinstance(node, (ast.Attribute, ast.Name)) and getattr(node, "attr", getattr(node, "id", ""))
                        in ("environ", "getenv", "environb")]
    assert libraries - set(_NOT_SHAPING_OUTCOMES) == set(example_cache.CHAIN_LIBRARIES)
    assert not environment
