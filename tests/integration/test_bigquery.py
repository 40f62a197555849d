"""The job reading BigQuery tables and queries, against a real local BigQuery server
(bqemulator, tests/support/emulators.py): rows of URIs, rows of BYTES, a query, bad rows, bad flags,
and BigQuery + Cloud Storage + local files in one run."""

from __future__ import annotations

import json
import pathlib

import pytest

from beam_etl.beam.sources import oxford
from pipelines import preprocess
from tests.support import emulators
from tests.support.jobs import run_job
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow

PROJECT = emulators.BIGQUERY_PROJECT
COLUMN_FLAGS = ("--bigquery_label_column", "label", "--bigquery_label_name_column", "label_name",
                "--bigquery_split_column", "split")


def _schema(media_type):
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

    return [bigquery.SchemaField("key", "STRING"), bigquery.SchemaField("image", media_type),
            bigquery.SchemaField("mask", media_type), bigquery.SchemaField("label", "INT64"),
            bigquery.SchemaField("label_name", "STRING"), bigquery.SchemaField("split", "STRING")]


def _create_table(client, table_id, media_type, rows):
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

    table = client.create_table(bigquery.Table(f"{PROJECT}.{table_id}", schema=_schema(media_type)))
    for start in range(0, len(rows), 50):
        errors = client.insert_rows(table, rows[start:start + 50])
        assert not errors, errors


def _oxford_rows(pets_dir: pathlib.Path) -> list[dict]:
    """One row per image of the shared dataset that has a mask, with its list's label and
    split: the same inputs, labels and splits that ``--oxford_pets`` pairs up from the files."""
    listed = {}
    for name, split in oxford.OXFORD_LISTS:
        path = pets_dir / "annotations" / name
        listed.update(oxford.parse_oxford_list(path.read_text(), str(path), split))
    rows = []
    for image in sorted((pets_dir / "images").glob("*.jpg")):
        mask = pets_dir / "annotations" / "trimaps" / f"{image.stem}.png"
        if not mask.exists():
            continue
        split, label, label_name, *_ = listed.get(image.stem, (None, None, None, None, None))
        rows.append({"key": image.stem, "image": str(image), "mask": str(mask), "label": label,
                     "label_name": label_name, "split": split})
    return rows


@pytest.fixture(scope="module")
def bigquery(pets_dir):
    """An emulator with dataset ``pets`` and two tables of the shared dataset: ``uris`` (STRING
    paths) and ``blobs`` (the files' BYTES)."""
    with emulators.bigquery_emulator() as client:
        client.create_dataset("pets")
        rows = _oxford_rows(pets_dir)
        _create_table(client, "pets.uris", "STRING", rows)
        _create_table(client, "pets.blobs", "BYTES", [
            {**row, "image": pathlib.Path(row["image"]).read_bytes(),
             "mask": pathlib.Path(row["mask"]).read_bytes()} for row in rows])
        yield client


@pytest.fixture(scope="module")
def oxford_output(pets_dir, tmp_path_factory):
    """The same data read with --oxford_pets: what every BigQuery run is compared with."""
    out = tmp_path_factory.mktemp("oxford")
    return out, run_job(pets_dir, out, "--no_statistics")


def _run(out, *flags) -> dict:
    return preprocess.run(["--output", str(out), "--num_shards", "2", "--image_size", "40x32",
                           "--project", PROJECT, "--no_statistics", *flags])


def _shards(out: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tfrecord"))}


def _rejected(out: pathlib.Path) -> list[dict]:
    return [json.loads(line) for path in sorted((out / "rejected").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


def test_table_of_uris_gives_the_same_shards_as_the_files(bigquery, oxford_output, tmp_path):
    oxford_dir, oxford = oxford_output
    manifest = _run(tmp_path, "--bigquery_table", f"{PROJECT}:pets.uris", *COLUMN_FLAGS)
    # Byte for byte: same keys, labels, splits, pixels, and image/filename (the same paths).
    assert _shards(tmp_path) == _shards(oxford_dir)
    assert manifest["num_written"] == oxford["num_written"] > 0
    # The files' rejections at pairing (orphans) have no row; the decoding ones are the same.
    decoding = [(r["key"], r["reason"]) for r in _rejected(oxford_dir) if r["stage"] != "pair"]
    assert sorted((r["key"], r["reason"]) for r in _rejected(tmp_path)) == sorted(decoding)
    assert manifest["num_inputs"] == manifest["num_written"] + manifest["num_rejected"]


def test_table_of_bytes_gives_the_same_examples(bigquery, oxford_output, tmp_path):
    oxford_dir, oxford = oxford_output
    # DATASET.TABLE takes --project.
    manifest = _run(tmp_path, "--bigquery_table", "pets.blobs", *COLUMN_FLAGS)
    assert manifest["num_written"] == oxford["num_written"]
    for split, info in oxford["splits"].items():
        ours = read_examples([tmp_path / name for name in manifest["splits"][split]["files"]])
        theirs = read_examples([oxford_dir / name for name in info["files"]])
        assert [e["key"] for e in ours] == [e["key"] for e in theirs]
        for a, b in zip(ours, theirs):
            assert (a["image"] == b["image"]).all() and (a["mask"] == b["mask"]).all()
            assert (a["label"], a["label_name"]) == (b["label"], b["label_name"])
            # No file: the record names the row's cell.
            assert a["filename"] == f"bigquery://{PROJECT}:pets.blobs/{a['key']}/image"
    truncated = [r for r in _rejected(tmp_path) if r["reason"] == "truncated"]
    assert [r["uri"] for r in truncated] == [f"bigquery://{PROJECT}:pets.blobs/basset_hound_1/image"]


def test_query_reads_only_the_rows_it_selects(bigquery, oxford_output, tmp_path):
    oxford_dir, oxford = oxford_output
    manifest = _run(tmp_path, "--bigquery_query",
                    f"SELECT * FROM `{PROJECT}.pets.uris` WHERE split = 'test'", *COLUMN_FLAGS)
    test_keys = [e["key"] for e in read_examples(
        [oxford_dir / name for name in oxford["splits"]["test"]["files"]])]
    assert manifest["splits"]["test"]["num_examples"] == len(test_keys) > 0
    assert manifest["splits"]["train"]["num_examples"] == manifest["splits"]["val"]["num_examples"] == 0
    assert [e["key"] for e in read_examples(
        [tmp_path / name for name in manifest["splits"]["test"]["files"]])] == test_keys
    # Beam's temporary dataset for the query result is gone; the source dataset is not.
    assert [d.dataset_id for d in bigquery.list_datasets()] == ["pets"]


def test_bad_rows_become_rejections_with_their_key(bigquery, pets_dir, tmp_path):
    good = _oxford_rows(pets_dir)[0]
    image, mask = pathlib.Path(good["image"]).read_bytes(), pathlib.Path(good["mask"]).read_bytes()
    rows = [
        {"key": "good", "image": image, "mask": mask, "split": "train"},
        {"key": "no_image", "image": None, "mask": mask},
        {"key": "no_mask", "image": image, "mask": None},
        {"key": None, "image": image, "mask": mask},
        {"key": "not_an_image", "image": b"this is text", "mask": mask},
        {"key": "odd_split", "image": image, "mask": mask, "split": "holdout"},
    ]
    _create_table(bigquery, "pets.bad_blobs", "BYTES", rows)
    _create_table(bigquery, "pets.bad_uris", "STRING", [
        {"key": "missing_file", "image": str(tmp_path / "nowhere.jpg"),
         "mask": good["mask"]}])
    manifest = _run(tmp_path / "out", "--bigquery_table", f"{PROJECT}:pets.bad_blobs",
                    "--bigquery_table", f"{PROJECT}:pets.bad_uris", "--bigquery_split_column", "split")
    source = f"bigquery://{PROJECT}:pets.bad_blobs"
    assert sorted((r["key"] or "", r["reason"], r["uri"]) for r in _rejected(tmp_path / "out")) == sorted([
        ("no_image", "missing_image", f"{source}/no_image/image"),
        ("no_mask", "missing_mask", f"{source}/no_mask/mask"),
        ("", "missing_key", source),
        ("not_an_image", "unknown_format", f"{source}/not_an_image/image"),
        ("odd_split", "unknown_split", f"{source}/odd_split/split"),
        ("missing_file", "unreadable", str(tmp_path / "nowhere.jpg")),
    ])
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (7, 1, 6)
    assert manifest["splits"]["train"]["num_examples"] == 1


@pytest.mark.parametrize("flags, message", [
    (("--bigquery_table", f"{PROJECT}:pets.absent"), f"--bigquery_table '{PROJECT}:pets.absent' cannot be read"),
    (("--bigquery_table", f"{PROJECT}:pets.uris", "--bigquery_image_column", "photo"),
     "--bigquery_image_column 'photo' is not a column of"),
    (("--bigquery_table", f"{PROJECT}:pets.uris", "--bigquery_label_column", "label_name"),
     "--bigquery_label_column 'label_name' of test-project:pets.uris is STRING; expected INTEGER or INT64"),
])
def test_a_table_that_cannot_be_used_fails_at_launch(bigquery, tmp_path, flags, message, capsys):
    with pytest.raises(SystemExit) as exited:
        _run(tmp_path, *flags)
    assert exited.value.code == 2 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_bigquery_and_cloud_storage_and_local_files_in_one_run(bigquery, pets_dir, oxford_output, tmp_path):
    """Rows of the URI table whose key starts with a-m, the Cloud Storage copy of every image
    whose stem starts with [n-z], and the local Oxford directory; every key exists in the local
    directory and in one of the others, so each duplicate is rejected once, naming the
    source it lost to: keys stay unique, and which copy wins does not depend on the runner."""
    oxford_dir, oxford = oxford_output
    with emulators.gcs_emulator():
        emulators.create_bucket("pets")
        emulators.upload_tree(pets_dir / "images", "gs://pets/images")
        emulators.upload_tree(pets_dir / "annotations" / "trimaps", "gs://pets/trimaps")
        manifest = _run(
            tmp_path, "--oxford_pets", str(pets_dir),
            "--bigquery_query", f"SELECT * FROM `{PROJECT}.pets.uris` WHERE LOWER(SUBSTR(key, 1, 1)) <= 'm'",
            "--images", "gs://pets/images/[n-zN-Z]*.jpg", "--masks", "gs://pets/trimaps/[n-zN-Z]*.png",
            *COLUMN_FLAGS)
    assert manifest["num_written"] == oxford["num_written"]
    duplicates = [r for r in _rejected(tmp_path) if r["reason"] == "duplicate_key"]
    assert duplicates and len({r["key"] for r in duplicates}) == len(duplicates)
    examples = read_examples(sorted(tmp_path.glob("*.tfrecord")))
    assert len({e["key"] for e in examples}) == len(examples) == oxford["num_written"]
    winners = {e["key"]: e["filename"] for e in examples}
    for rejection in duplicates:  # the copy kept is the one whose URI sorts first
        assert rejection["key"] not in winners or winners[rejection["key"]] <= rejection["uri"]
    # Local paths sort before gs://: every Cloud Storage copy lost to the local file.
    assert sorted(r["key"] for r in duplicates if r["uri"].startswith("gs://")) == sorted(
        path.stem for path in (pets_dir / "images").glob("[n-zN-Z]*.jpg")
        if (pets_dir / "annotations" / "trimaps" / f"{path.stem}.png").exists())
    assert manifest["num_inputs"] == manifest["num_written"] + manifest["num_rejected"]
