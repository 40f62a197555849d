"""The job on a real dask.distributed cluster of 2 worker processes, started as
``--dask_local_workers`` starts it, against the DirectRunner."""

from __future__ import annotations

import os

import pytest
from distributed import Client

from beam_etl.beam import launch
from beam_etl.beam import manifest as manifest_lib
from tests.support.jobs import comparable, output_files, run_job

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
