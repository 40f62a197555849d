"""The job on a real dask.distributed cluster of 2 worker processes, started as
``--dask_local_workers`` starts it, against the DirectRunner."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from distributed import Client

from beam_etl.beam import launch, outcome_store
from beam_etl.beam import manifest as manifest_lib
from beam_etl.output_layout import CACHE_DIR
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support.jobs import comparable, output_files, run_job

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler_address():
    with launch.local_dask_cluster(2) as cluster:
        yield cluster.scheduler_address


_WORKER_ENVIRON = ("MALLOC_TRIM_THRESHOLD_", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def _worker_environ():
    return {name: os.environ.get(name) for name in _WORKER_ENVIRON}


def test_the_clusters_the_job_starts_set_glibc_and_tensorflow_for_one_thread_workers(scheduler_address):
    # dask.distributed's MALLOC_TRIM_THRESHOLD_=65536 pins glibc's mmap threshold (slower image
    # steps); TensorFlow (which reads TF_NUM_*_THREADS) would size its pools to the machine.
    with Client(scheduler_address) as client:
        values = list(client.run(_worker_environ).values())
    expected = {"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS", "1"),
                "TF_NUM_INTEROP_THREADS": os.environ.get("TF_NUM_INTEROP_THREADS", "1")}
    assert values == [expected] * 2



def test_job_on_dask_gives_the_direct_runners_bytes_and_statistics(pets_dir, tmp_path, raw_output,
                                                                   scheduler_address):
    direct_dir, direct = raw_output
    dask = run_job(pets_dir, tmp_path, "--image_format", "raw", "--augment_copies", "2",
                   "--mask_values", "1,2,3", "--runner", "beam_dask.DaskRunner",
                   "--dask_client_address", scheduler_address)
    assert dask == manifest_lib.read_manifest(str(tmp_path))
    assert output_files(tmp_path) == output_files(direct_dir)
    assert dask["statistics"] == direct["statistics"]
    assert comparable(dask) == comparable(direct)


def test_dask_local_workers_starts_a_cluster_of_its_own_and_writes_the_same_bytes(pets_dir, tmp_path, raw_output):
    direct_dir, direct = raw_output
    dask = run_job(pets_dir, tmp_path, "--image_format", "raw", "--augment_copies", "2",
                   "--mask_values", "1,2,3", "--dask_local_workers", "1")
    assert output_files(tmp_path) == output_files(direct_dir)
    assert comparable(dask) == comparable(direct)


def _pairs(root, out, *extra):
    return ["--images", str(root / "images" / "*.jpg"), "--masks", str(root / "annotations" / "trimaps" / "*.png"),
            "--output", str(out), "--image_size", "40x32", "--num_shards", "2", "--augment_copies", "1", *extra]


def _entries(out) -> dict[str, list]:
    """The cache's entries by name: where each was written (a segment and an offset)."""
    return outcome_store.OutcomeStore(str(out / CACHE_DIR)).entries()


def test_a_grown_dataset_on_dask_computes_only_its_new_inputs_and_matches_a_fresh_run(tmp_path,
                                                                                      scheduler_address):
    root, later = tmp_path / "data", tmp_path / "later"
    sample_data.generate(str(root), num_images=14, seed=2)
    (later / "images").mkdir(parents=True)
    (later / "masks").mkdir()
    for image in sorted((root / "images").glob("*.jpg"))[10:]:
        shutil.move(image, later / "images" / image.name)
        shutil.move(root / "annotations" / "trimaps" / f"{image.stem}.png", later / "masks" / f"{image.stem}.png")
    out = tmp_path / "out"
    on_dask = ("--runner", "beam_dask.DaskRunner", "--dask_client_address", scheduler_address)
    first = preprocess.run(_pairs(root, out, *on_dask))
    before = _entries(out)
    assert len(before) == first["num_inputs"] == 10
    for image in (later / "images").iterdir():
        shutil.copy(image, root / "images" / image.name)
        shutil.copy(later / "masks" / f"{image.stem}.png", root / "annotations" / "trimaps" / f"{image.stem}.png")
    grown = preprocess.run(_pairs(root, out, "--overwrite", *on_dask))
    after = _entries(out)
    assert len(after) == 14 and {name: after[name] for name in before} == before  # none computed again
    assert grown["changes"]["added"] == 4 and grown["changes"]["unchanged"] == 10
    fresh = preprocess.run(_pairs(root, tmp_path / "fresh"))  # on the DirectRunner
    assert output_files(out) == output_files(tmp_path / "fresh")
    assert comparable(grown) == comparable(fresh)


def test_a_killed_run_on_its_own_dask_cluster_resumes(tmp_path):
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=40, seed=6)
    command = [sys.executable, "-m", "pipelines.preprocess", *_pairs(root, out, "--dask_local_workers", "2")]
    job = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # the machine dies once a few images are done: launcher, scheduler and workers at once
        deadline = time.monotonic() + 240
        while len(_entries(out)) < 5 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    cache = outcome_store.OutcomeStore(str(out / CACHE_DIR))
    done = {name: written for name, written in _entries(out).items()
            if cache.read(name)[0] is not None}  # not one cut short by the kill
    assert 5 <= len(done) < 40 and not (out / "manifest.json").exists()
    resumed = subprocess.run(command, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming run" in resumed.stdout
    after = _entries(out)
    assert len(after) == 40 and {name: after[name] for name in done} == done  # reused, not computed again
    fresh = preprocess.run(_pairs(root, tmp_path / "fresh"))
    assert output_files(out) == output_files(tmp_path / "fresh")
    assert comparable(json.loads((out / "manifest.json").read_text())) == comparable(fresh)


def test_a_worker_lost_mid_run_costs_the_output_nothing(tmp_path, monkeypatch):
    """A worker of the cluster killed while the per-image step runs: the scheduler runs its work
    again elsewhere, and the output is the one a run that lost nothing writes. (The cluster's
    temporary folder is the test's: a killed worker leaves TensorFlow's autograph files there.)"""
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=120, seed=7)
    (tmp_path / "temporary").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "temporary"))
    with launch.local_dask_cluster(2) as cluster, Client(cluster.scheduler_address) as client:
        workers = client.run(os.getpid)  # {address: pid}
        command = [sys.executable, "-m", "pipelines.preprocess",
                   *_pairs(root, out, "--runner", "beam_dask.DaskRunner", "--dask_client_address",
                           cluster.scheduler_address)]
        job = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(_entries(out) if (out / CACHE_DIR).exists() else ()) < 20 and job.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.poll() is None  # still running
        address, lost = sorted(workers.items())[0]
        os.kill(lost, signal.SIGKILL)
        stdout, stderr = job.communicate(timeout=300)
        assert job.returncode == 0, stderr[-3000:]
        assert address not in client.scheduler_info()["workers"]  # the scheduler lost it meanwhile
    assert "120 inputs -> 120 written (" in stdout and ", 0 rejected" in stdout, stdout
    fresh = preprocess.run(_pairs(root, tmp_path / "fresh"))
    assert output_files(out) == output_files(tmp_path / "fresh")
    assert comparable(json.loads((out / "manifest.json").read_text())) == comparable(fresh)


def test_a_job_its_cluster_cancels_fails_and_never_reports_the_output_it_was_to_replace(tmp_path):
    """A cluster restarted while the job runs cancels its tasks. Beam's Dask result took a
    cancelled task for a finished one, and the command printed the counts of the output it was
    to replace as its own, with status 0. The run fails, and the output is the one it was."""
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=120, seed=7)
    replaced = preprocess.run(_pairs(root, out))
    files = output_files(out)
    with launch.local_dask_cluster(2) as cluster, Client(cluster.scheduler_address) as client:
        command = [sys.executable, "-m", "pipelines.preprocess",
                   *_pairs(root, out, "--image_size", "24", "--overwrite", "--runner", "beam_dask.DaskRunner",
                           "--dask_client_address", cluster.scheduler_address)]
        job = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while len(_entries(out)) < 130 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.poll() is None  # still running, some of its images done
        client.restart()
        stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 1, (stdout, stderr[-3000:])
    assert "inputs ->" not in stdout and "cancelled" in stderr, (stdout, stderr[-3000:])
    assert json.loads((out / "manifest.json").read_text())["run_id"] == replaced["run_id"]
    assert {name: data for name, data in output_files(out).items() if name in files} == files


def test_a_scheduler_address_where_none_answers_is_refused_before_the_output_is_touched(tmp_path):
    """dask's client waited 30 s for it after the output's lease was taken, then failed the run,
    which left a cluster's run its lease."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]  # (closed again: nothing listens there)
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=4, seed=1)
    address = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.preprocess",
                           *_pairs(root, out, "--runner", "beam_dask.DaskRunner", "--dask_client_address", address)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2 and f"--dask_client_address {address!r}: no Dask scheduler answers there" in done.stderr
    assert time.monotonic() - started < 25 and not out.exists()


@pytest.fixture()
def answering_server():
    """``serve(reply)``: the tcp:// address of a server that accepts connections and writes
    ``reply`` (b"": nothing) on each, a service that is not Dask's."""
    listeners, connections = [], []

    def serve(reply: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def accept():
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                connections.append(connection)
                connection.sendall(reply)

        threading.Thread(target=accept, daemon=True).start()
        return f"tcp://127.0.0.1:{listener.getsockname()[1]}"

    yield serve
    for opened in (*connections, *listeners):
        opened.close()


@pytest.mark.parametrize("reply", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], ids=["silent", "http"])
def test_an_address_where_a_service_that_is_not_dask_answers_is_refused_before_the_output_is_touched(
        tmp_path, answering_server, reply):
    """dask's client waits for ever for the handshake of a service that accepts its connection
    and never answers as Dask does; the run then hung holding the output's lease."""
    address = answering_server(reply)
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=4, seed=1)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.preprocess",
                           *_pairs(root, out, "--runner", "beam_dask.DaskRunner", "--dask_client_address", address,
                                   "--dask_connection_timeout", "5")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"--dask_client_address {address!r}: no Dask scheduler answers there (" in done.stderr
    assert time.monotonic() - started < 40 and not out.exists()
    if not reply:  # (a service that sends nothing: the handshake waited for, as long as the flag says)
        assert "(nothing answered Dask's handshake within 5 s)" in done.stderr


def test_the_address_of_a_dask_worker_is_refused_naming_what_answers(tmp_path, scheduler_address):
    with Client(scheduler_address) as client:
        worker = sorted(client.scheduler_info()["workers"])[0]
    root, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(root), num_images=4, seed=1)
    done = subprocess.run([sys.executable, "-m", "pipelines.preprocess",
                           *_pairs(root, out, "--runner", "beam_dask.DaskRunner", "--dask_client_address", worker)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"--dask_client_address {worker!r}: a Dask Worker answers there, not a scheduler" in done.stderr
    assert not out.exists()
