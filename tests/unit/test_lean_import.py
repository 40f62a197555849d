"""Beam imported without the optional integrations the job never uses (pandas, pymongo; Google
Cloud's clients where the command reaches no Google Cloud service), in the launcher and in the
warm parent of its workers; those libraries still import afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from beam_etl.beam import lean_import

TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What a fresh interpreter reports once the code under test has run: which of the unused
# libraries were loaded, whether Beam's MongoDB IO went without pymongo, and whether the
# libraries import afterwards.
_REPORT = """
    import json, sys
    loaded = [name for name in ("pandas", "pymongo", "bson") if sys.modules.get(name) is not None]
    without_mongodb = sys.modules["apache_beam.io.mongodbio"].MongoClient is None
    import pandas, pymongo
    print(json.dumps({"loaded": loaded, "without_mongodb": without_mongodb,
                      "afterwards": [pandas.DataFrame({"a": [1, 2]})["a"].sum().item(), pymongo.ASCENDING]}))
    """


def _report(code: str, cwd) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + textwrap.dedent(_REPORT)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": TREE}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_beam_loads_without_them_and_they_load_afterwards_with_nothing_said(tmp_path):
    report, stderr = _report("from beam_etl.beam import lean_import; lean_import.import_beam()", tmp_path)
    assert report == {"loaded": [], "without_mongodb": True, "afterwards": [3, 1]}
    assert stderr == ""  # (Beam's note that it found no pymongo is not shown)


def test_a_plain_import_loads_them_which_is_what_is_saved(tmp_path):
    report, _ = _report("import apache_beam", tmp_path)
    assert report["loaded"] == ["pandas", "pymongo", "bson"] and report["without_mongodb"] is False


def test_the_warm_parent_loads_beam_that_way(tmp_path):
    report, _ = _report("from beam_etl.beam import warm_workers; warm_workers.preload()", tmp_path)
    assert report["loaded"] == [] and report["without_mongodb"] is True


def test_the_job_command_loads_beam_that_way(pets_dir, tmp_path):
    report, _ = _report(f"""
        from pipelines import preprocess
        assert preprocess.run(["--oxford_pets", {str(pets_dir)!r}, "--output", {str(tmp_path / "out")!r},
                               "--image_size", "16", "--no_cache"])["num_inputs"] > 0
        """, tmp_path)
    assert report["without_mongodb"] is True


def test_once_beam_is_loaded_nothing_is_blocked():
    import apache_beam  # pylint: disable=import-outside-toplevel

    lean_import.import_beam()
    assert sys.modules["apache_beam"] is apache_beam
    assert all(sys.modules.get(name, "not loaded") is not None for name in lean_import.UNUSED)


_GOOGLE_CLOUD_REPORT = """
    import json, sys
    from apache_beam.io.filesystems import FileSystems
    clients = ("google.auth", "google.api_core", "apitools", "google.cloud.storage", "google.cloud.bigquery",
               "google.cloud.dataflow", "google.cloud.pubsub")  # (google.cloud itself: a namespace, made at start)
    loaded = [name for name in clients if sys.modules.get(name) is not None]
    local = type(FileSystems.get_filesystem("/tmp/x")).__name__
    try:
        gcs = type(FileSystems.get_filesystem("gs://bucket/x")).__name__
    except ValueError:
        gcs = None
    from google.cloud import storage
    import logging
    handlers = [type(handler).__name__ for handler in logging.getLogger().handlers]
    print(json.dumps({"loaded": loaded[:3], "local": local, "gcs": gcs, "afterwards": storage.Client.__name__,
                      "root_handlers": handlers}))
    """


def _google_cloud_report(code: str, cwd) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + textwrap.dedent(_GOOGLE_CLOUD_REPORT)],
                          cwd=cwd, env={**os.environ, "PYTHONPATH": TREE}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_without_google_cloud_beam_loads_no_client_and_the_clients_load_afterwards(tmp_path):
    report, stderr = _google_cloud_report(
        "from beam_etl.beam import lean_import; lean_import.import_beam(google_cloud=False)", tmp_path)
    assert report == {"loaded": [], "local": "LocalFileSystem", "gcs": None, "afterwards": "Client",
                      "root_handlers": []}
    assert stderr == ""  # (nor Beam's note that its BigQuery clients found no apitools)
    report, _ = _google_cloud_report("from beam_etl.beam import warm_workers; warm_workers.preload(False)", tmp_path)
    assert report["loaded"] == [] and report["gcs"] is None
    # Beam's note goes through ``logging.warning``, which gives the root logger a handler on
    # stderr where it has none: the worker's own logs would then be printed on the job's stderr
    assert report["root_handlers"] == []


def test_by_default_and_for_a_command_that_reaches_google_cloud_beam_loads_its_clients(tmp_path):
    report, _ = _google_cloud_report("from beam_etl.beam import lean_import; lean_import.import_beam()", tmp_path)
    assert report["gcs"] == "GCSFileSystem" and report["loaded"]


@pytest.mark.parametrize("argv", [
    ["--oxford_pets", "gs://bucket/pets", "--output", "OUT"],
    ["--images", "DATA/*.jpg", "--masks", "DATA/*.png", "--output", "gs://bucket/out"],
    ["--oxford_pets", "DATA", "--output", "OUT", "--cache=gs://bucket/cache"],
    ["--bigquery_table", "p:d.t", "--output", "OUT"],
    ["--bigquery_query", "SELECT 1", "--output", "OUT"],
    ["--oxford_pets", "DATA", "--output", "OUT", "--runner", "DataflowRunner"],
    ["--oxford_pets", "DATA", "--output", "OUT", "--runner=apache_beam.runners.dataflow.DataflowRunner"],
    ["--oxford_pets", "DATA", "--output", "OUT", "--project", "p", "--dry_run"],
    ["--oxford_pets", "DATA", "--output", "OUT", "--temp_location=GS://Bucket/tmp"],
])
def test_a_command_that_may_reach_google_cloud_keeps_the_clients(argv):
    assert lean_import.uses_google_cloud(argv)


def test_a_local_command_leaves_them_out():
    assert not lean_import.uses_google_cloud(["--oxford_pets", "DATA", "--output", "OUT", "--image_size", "128"])
    assert not lean_import.uses_google_cloud(["--images", "d/*.jpg", "--masks", "d/*.png", "--output", "o",
                                              "--dask_local_workers", "2", "--cache", "/c"])


def test_the_job_command_loads_beam_without_google_cloud_where_it_reaches_none(pets_dir, tmp_path):
    report, _ = _google_cloud_report(f"""
        from pipelines import preprocess
        manifest = preprocess.run(["--oxford_pets", {str(pets_dir)!r}, "--output", {str(tmp_path / "out")!r},
                                   "--image_size", "16"])
        assert manifest["num_inputs"] > 0 and manifest["statistics"]["num_images"] > 0
        """, tmp_path)
    assert report["loaded"] == [] and report["gcs"] is None
