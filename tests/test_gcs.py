"""The job from gs:// to gs:// against a real local Cloud Storage server (tests/emulators.py)."""

from __future__ import annotations

import json

import pytest

from beam_etl import manifest as manifest_lib
from tests import emulators
from tests.jobs import run_job
from tests.tfrecords import read_examples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gcs_pets(pets_dir):
    """The shared dataset uploaded to gs://pets/raw on a fresh emulator."""
    with emulators.gcs_emulator():
        emulators.create_bucket("pets")
        emulators.upload_tree(pets_dir, "gs://pets/raw")
        yield "gs://pets/raw"


def test_job_from_gcs_to_gcs_writes_what_it_writes_locally(gcs_pets, pets_dir, tmp_path):
    # Statistics need TensorFlow's own GCS client, which cannot reach the emulator (module doc).
    flags = ("--no_statistics", "--augment_copies", "1", "--mask_values", "1,2,3")
    remote = run_job(gcs_pets, "gs://pets/out", *flags)
    local = run_job(pets_dir, tmp_path, *flags)
    assert remote == manifest_lib.read_manifest("gs://pets/out")
    for key in ("num_inputs", "num_written", "num_rejected", "num_examples"):
        assert remote[key] == local[key], key
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    for split, info in local["splits"].items():
        assert remote["splits"][split]["files"] == info["files"]
        for name in info["files"]:  # TensorFlow cannot read gs:// here: read a copy
            (downloaded / name).write_bytes(emulators.read_bytes(f"gs://pets/out/{name}"))
        from_gcs = read_examples([downloaded / name for name in info["files"]])
        from_disk = read_examples([tmp_path / name for name in info["files"]])
        assert [e["key"] for e in from_gcs] == [e["key"] for e in from_disk]
        for a, b in zip(from_gcs, from_disk):
            # Same pixels, masks and labels; only image/filename says where the input was.
            assert a["filename"] == b["filename"].replace(str(pets_dir), gcs_pets)
            assert (a["image"] == b["image"]).all() and (a["mask"] == b["mask"]).all()
            assert (a["label"], a["label_name"]) == (b["label"], b["label_name"])
    remote_rejected = [json.loads(line) for line in
                       emulators.read_bytes("gs://pets/out/rejected/rejected-00000-of-00001.jsonl").splitlines()]
    local_rejected = [json.loads(line) for line in
                      (tmp_path / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()]
    assert remote_rejected and all(r["uri"].startswith("gs://pets/raw/") for r in remote_rejected)
    assert [(r["key"], r["reason"]) for r in remote_rejected] == [(r["key"], r["reason"]) for r in local_rejected]
    # Nothing is left of the temporary files: object stores have no directories to delete.
    assert not emulators.list_objects("gs://pets/out/.incomplete")


def test_overwrite_clears_an_earlier_gcs_output(gcs_pets):
    run_job(gcs_pets, "gs://pets/again", "--no_statistics", "--num_shards", "3")
    first = set(emulators.list_objects("gs://pets/again"))
    assert "gs://pets/again/train-00002-of-00003.tfrecord" in first
    with pytest.raises(SystemExit, match="--overwrite"):
        run_job(gcs_pets, "gs://pets/again", "--no_statistics")
    run_job(gcs_pets, "gs://pets/again", "--no_statistics", "--overwrite")
    second = set(emulators.list_objects("gs://pets/again"))
    assert "gs://pets/again/train-00002-of-00003.tfrecord" not in second  # 2 shards now
    assert "gs://pets/again/manifest.json" in second
