"""The whole job on generated data with defects: DirectRunner, real files, read back by TensorFlow."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from beam_etl.beam import manifest as manifest_lib
from beam_etl.output_layout import IncompleteOutputError
from beam_etl.tools.sample_data import breed_ids
from pipelines import preprocess
from tests.support.jobs import comparable, output_files
from tests.support.tfrecords import mask_values, read_examples

pytestmark = pytest.mark.slow


def _run(pets_dir, out, *extra):
    return preprocess.run(["--oxford_pets", str(pets_dir), "--output", str(out), *extra])




@pytest.fixture(scope="module")
def augmented_run(pets_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    manifest = _run(pets_dir, out, "--image_size", "64x48", "--num_shards", "2", "--augment_copies", "2",
                    "--mask_values", "1,2,3", "--val_fraction", "0.3")
    return out, manifest


def test_every_input_is_written_or_rejected(augmented_run, defects, pets_dir):
    out, manifest = augmented_run
    assert manifest == manifest_lib.read_manifest(str(out))
    assert manifest["num_inputs"] == 24 + len(defects)
    expected_rejects = {d["name"]: d["expect"].split(":")[1] for d in defects if d["expect"].startswith("rejected")}
    rejected = [json.loads(line) for line in (out / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()]
    assert {r["key"]: r["reason"] for r in rejected} == expected_rejects
    assert {r["uri"] for r in rejected} == {f"{pets_dir}/images/{name}.jpg" for name in expected_rejects}
    assert manifest["num_rejected"] == len(expected_rejects)
    assert manifest["num_written"] + manifest["num_rejected"] == manifest["num_inputs"]
    assert manifest["rejected"]["by_reason"] == {reason: list(expected_rejects.values()).count(reason)
                                                 for reason in set(expected_rejects.values())}


@pytest.mark.parametrize("sources", [("--oxford_pets", "./data"),
                                     ("--images", "data/images/*.jpg", "--masks", "data//annotations/trimaps/*.png")])
def test_relative_sources_are_recorded_where_they_are(pets_dir, tmp_path, monkeypatch, sources):
    """A relative root or glob is recorded (the manifest's flags, the lineage index, the rejected
    list) as the files' place, not as a path from a folder the output does not record; the
    working folder's glob characters stay literal."""
    here = tmp_path / "run [1] *"
    shutil.copytree(pets_dir, here / "data")
    monkeypatch.chdir(here)
    manifest = preprocess.run([*sources, "--output", str(tmp_path / "out"), "--image_size", "32"])
    monkeypatch.chdir(tmp_path)  # (read from elsewhere)
    escaped = str(here).replace("[", "[[]").replace("*", "[*]")
    expected = ({"oxford_pets": [f"{here}/data"]} if sources[0] == "--oxford_pets" else
                {"images": [f"{escaped}/data/images/*.jpg"], "masks": [f"{escaped}/data/annotations/trimaps/*.png"]})
    assert {name: manifest["flags"][name] for name in expected} == expected
    lineage = [json.loads(line) for path in sorted((tmp_path / "out" / "lineage").glob("*.jsonl"))
               for line in path.read_text().splitlines()]
    rejected = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "rejected-00000-of-00001.jsonl")
                .read_text().splitlines()]
    assert len(lineage) == manifest["num_written"] and len(rejected) == manifest["num_rejected"] > 0
    uris = [entry[field] for entry in lineage for field in ("image_uri", "mask_uri")] + [r["uri"] for r in rejected]
    assert all(uri.startswith(f"{here}/data/") for uri in uris)
    assert all(os.path.isfile(entry[field]) for entry in lineage for field in ("image_uri", "mask_uri"))


@pytest.mark.parametrize("folder, argv, refused", [
    ("sub", ["--images", "../data/images/*", "--masks", "../data/annotations/trimaps/*.png", "--output",
             "../data/images"], "--output '{t}/data/images' lies in '{t}/data/images'"),  # (made absolute)
    ("sub", ["--oxford_pets", "../data", "--output", "../data/images/out"], "lies in '{t}/data/images'"),
    ("sub", ["--images", "{t}/data/annotations/../images/*.jpg", "--masks", "{t}/data/annotations/trimaps/*.png",
             "--output", "{t}/data/images/out"], "lies in '{t}/data/images'"),
    ("w[1]", ["--images", "data/images", "--masks", "data/annotations/trimaps", "--output", "o", "--no_statistics"],
     "is a folder, not files"),
    ("w[1]", ["--oxford_pets", "data", "--output", "o"], "holds a glob character"),  # (statistics on)
    ("sub", ["--images=~/data/images/*.jpg", "--masks", "../data/annotations/trimaps/*.png", "--output", "o"],
     "--images '~/data/images/*.jpg': the shell did not expand '~'"),
    ("sub", ["--images", "../data/images/", "--masks", "../data/annotations/trimaps/", "--output", "../data/out"],
     None),  # (a folder's name ending in "/" names its files, and lists no more than them)
    (b"w\xff", ["--images", "data/images/*.jpg", "--masks", "data/annotations/trimaps/*.png", "--output", "o"],
     None),  # (a working folder whose name is not UTF-8: the relative globs are kept as they are)
])
def test_relative_and_odd_paths_are_refused_or_run_as_the_folders_they_name(pets_dir, defects, tmp_path, monkeypatch,
                                                                           capsys, folder, argv, refused):
    here = tmp_path / os.fsdecode(folder)
    shutil.copytree(pets_dir, tmp_path / "data")
    if folder != "sub":
        shutil.copytree(pets_dir, here / "data")
    here.mkdir(exist_ok=True)
    monkeypatch.chdir(here)
    argv = [arg.format(t=tmp_path) for arg in argv] + ["--image_size", "32"]
    before = sorted(str(path) for path in tmp_path.rglob("*"))
    if refused is None:
        manifest = preprocess.run(argv)
        assert manifest["num_written"] > 0 and manifest["num_inputs"] == 24 + len(defects)
        return
    with pytest.raises(SystemExit) as exited:
        preprocess.run(argv)
    assert exited.value.code == 2 and refused.format(t=tmp_path) in capsys.readouterr().err
    assert sorted(str(path) for path in tmp_path.rglob("*")) == before


def test_shards_read_back_with_tensorflow(augmented_run, defects):
    out, manifest = augmented_run
    seen_sources = set()
    for split, info in manifest["splits"].items():
        assert info["files"] == [f"{split}-0000{i}-of-00002.tfrecord" for i in range(2)]
        examples = read_examples([out / name for name in info["files"]])
        assert len(examples) == info["num_examples"]
        assert all(e["image"].shape == (64, 48, 3) and e["mask"].shape == (64, 48) for e in examples)
        assert mask_values(examples) <= {1, 2, 3}
        originals = [e for e in examples if "#aug" not in e["key"]]
        assert len(originals) == info["num_source_examples"]
        copies = [e for e in examples if "#aug" in e["key"]]
        assert len(copies) == (2 * len(originals) if split == "train" else 0)  # only training is augmented
        for example in originals:
            breed = example["key"].rsplit("_", 1)[0]
            assert example["label_name"] == breed and example["label"] == breed_ids(breed)[0] - 1
            assert example["filename"].endswith(f"images/{example['key']}.jpg")
        seen_sources |= {e["key"] for e in originals}
    accepted = {d["name"] for d in defects if d["expect"] == "accepted"}
    assert accepted <= seen_sources  # grayscale, CMYK, EXIF, PNG-as-jpg, palette mask
    assert len(seen_sources) == manifest["num_written"]
    assert set(manifest["splits"]) == {"train", "val", "test"}


def test_manifest_describes_the_output(augmented_run):
    _, manifest = augmented_run
    assert manifest["image"] == {"height": 64, "width": 48, "channels": 3, "format": "jpeg", "mask_format": "png",
                                 "resize": "stretch"}
    assert "image/segmentation/class/encoded" in manifest["features"]
    assert manifest["flags"]["augment_copies"] == 2 and manifest["flags"]["mask_values"] == [1, 2, 3]
    assert manifest["versions"]["apache_beam"] == "2.77.0"
    assert manifest["num_examples"] == sum(s["num_examples"] for s in manifest["splits"].values())


def test_same_inputs_give_identical_bytes_in_process_and_with_two_worker_processes(pets_dir, tmp_path):
    flags = ("--image_size", "40", "--num_shards", "3", "--augment_copies", "1")
    first = _run(pets_dir, tmp_path / "a", *flags)
    _run(pets_dir, tmp_path / "b", *flags)
    _run(pets_dir, tmp_path / "c", *flags, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    reference = output_files(tmp_path / "a")
    assert len([name for name in reference if name.endswith(".tfrecord")]) == 3 * 3
    assert {"rejected/rejected-00000-of-00001.jsonl", "transform_fn/assets/class_names",
            "transformed_metadata/schema.pbtxt"} <= set(reference)
    assert output_files(tmp_path / "b") == reference
    assert output_files(tmp_path / "c") == reference
    third = manifest_lib.read_manifest(str(tmp_path / "c"))
    assert comparable(first) == comparable(third)


@pytest.mark.parametrize("image_format", ["raw", "png"])
def test_lossless_formats_hold_the_same_pixels(pets_dir, tmp_path, image_format):
    _run(pets_dir, tmp_path / "lossless", "--image_size", "32", "--image_format", image_format, "--num_shards", "1")
    manifest = _run(pets_dir, tmp_path / "png", "--image_size", "32", "--image_format", "png", "--num_shards", "1")
    assert manifest["image"]["mask_format"] == "png"
    for split, info in manifest["splits"].items():
        lossless = read_examples([tmp_path / "lossless" / f for f in info["files"]])
        reference = read_examples([tmp_path / "png" / f for f in info["files"]])
        assert [e["key"] for e in lossless] == [e["key"] for e in reference]
        for a, b in zip(lossless, reference):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["mask"], b["mask"])


def test_too_many_rejects_fail_the_job_and_leave_no_manifest(pets_dir, tmp_path):
    with pytest.raises(Exception, match="max_reject_fraction"):
        _run(pets_dir, tmp_path / "out", "--image_size", "32", "--max_reject_fraction", "0.05")
    with pytest.raises(IncompleteOutputError):
        manifest_lib.read_manifest(str(tmp_path / "out"))


def test_a_manifest_that_would_say_what_is_not_so_is_never_committed(pets_dir, tmp_path, monkeypatch):
    """The job checks its manifest as verify does (beam_etl.manifest_checks) before the commit:
    a mistake in assembling it fails the run and leaves the earlier output as it was."""
    out = tmp_path / "out"
    _run(pets_dir, out, "--image_size", "32", "--num_shards", "2")
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    monkeypatch.setattr(manifest_lib, "manifest_problems", lambda manifest: ["num_inputs is 1 more than ..."])
    with pytest.raises(Exception, match="the manifest would say what is not so: num_inputs is 1 more"):
        _run(pets_dir, out, "--image_size", "32", "--num_shards", "2", "--overwrite", "--no_cache")
    assert {path: path.read_bytes() for path in out.rglob("*") if path.is_file()} == before


def test_existing_output_needs_overwrite(pets_dir, tmp_path, capsys):
    _run(pets_dir, tmp_path / "out", "--image_size", "32", "--num_shards", "2")
    with pytest.raises(SystemExit) as exited:
        _run(pets_dir, tmp_path / "out", "--image_size", "32")
    assert exited.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    manifest = _run(pets_dir, tmp_path / "out", "--image_size", "32", "--overwrite")
    written = sorted(p.name for p in (tmp_path / "out").glob("*.tfrecord"))
    assert written == sorted(f for s in manifest["splits"].values() for f in s["files"])  # old shards gone
    assert not (tmp_path / "out" / ".incomplete").exists()


def test_metrics_count_inputs_writes_and_rejects(pets_dir, tmp_path, defects):
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter

    from beam_etl.beam import options

    from beam_etl.beam import launch, lease
    from beam_etl.beam.preprocess import Preprocess

    config, pipeline_options = options.parse_args(
        ["--oxford_pets", str(pets_dir), "--output", str(tmp_path / "out"), "--image_size", "32"])
    # (the runner the job's command runs on: Beam's DirectRunner would first try its PrismRunner)
    pipeline = beam.Pipeline(runner=launch.local_runner(pipeline_options), options=pipeline_options)
    _ = pipeline | Preprocess(config, lease.take(config.output).run_id)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query(MetricsFilter().with_namespace("beam_etl"))["counters"]}
    manifest = manifest_lib.read_manifest(str(tmp_path / "out"))
    assert counters["inputs"] + counters["rejected_at_source"] == manifest["num_inputs"]
    for split, info in manifest["splits"].items():
        assert counters.get(f"written_{split}", 0) == info["num_examples"]
    assert counters["rejected_truncated"] == 1 and counters["rejected_empty_file"] == 1
    assert counters["rejected_size_mismatch"] == 1 and counters["rejected_at_source"] == 1
