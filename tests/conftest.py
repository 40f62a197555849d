"""Shared fixtures: a small generated dataset, and shard reading through TensorFlow."""

from __future__ import annotations

import json
import os

import pytest

from beam_etl import sample_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
