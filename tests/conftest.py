"""Shared fixtures: a small generated dataset, and shard reading through TensorFlow."""

from __future__ import annotations

import json
import os

import pytest

from beam_etl.beam import example_cache, process_examples
from beam_etl.tools import sample_data
from tests.support.jobs import run_job

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def transform_cache(tmp_path_factory):
    """The tests' own cache of transform-graph templates (never the user's), shared by the
    session, and by the jobs the tests start as processes."""
    folder = tmp_path_factory.mktemp("beam_etl_cache")
    previous = os.environ.get("BEAM_ETL_CACHE_DIR")
    os.environ["BEAM_ETL_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["BEAM_ETL_CACHE_DIR"]
    else:
        os.environ["BEAM_ETL_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def pets_dir(tmp_path_factory):
    """24 regular images plus every defect, in the Oxford-IIIT layout."""
    root = tmp_path_factory.mktemp("pets")
    sample_data.generate(str(root), num_images=24, seed=3, defects=True)
    return root


@pytest.fixture(scope="session")
def defects(pets_dir):
    with open(pets_dir / "defects.json", encoding="utf-8") as handle:
        return json.load(handle)["defects"]


@pytest.fixture(scope="session")
def raw_output(pets_dir, tmp_path_factory):
    """(directory, manifest) of one run: raw records, two augmentation copies, trimap values."""
    out = tmp_path_factory.mktemp("raw_output")
    return out, run_job(pets_dir, out, "--image_format", "raw", "--augment_copies", "2",
                        "--mask_values", "1,2,3")


@pytest.fixture
def decodes(monkeypatch):
    """The keys of the inputs the per-image chain ran on, in order (for runs in this process:
    what the cache of outcomes spared shows as missing)."""
    seen = []
    real = example_cache.process_example

    def counting(record, *args):
        seen.append(record.key)
        return real(record, *args)

    monkeypatch.setattr(example_cache, "process_example", counting)
    return seen


@pytest.fixture
def reads(monkeypatch):
    """The paths of the local input files the per-image step read, in order (for runs in this
    process: a file the cache knows by its state is not read)."""
    seen = []
    real = process_examples._read_local_in_states  # pylint: disable=protected-access  # every local read

    def counting(path, *args):
        seen.append(path)
        return real(path, *args)

    monkeypatch.setattr(process_examples, "_read_local_in_states", counting)
    return seen
