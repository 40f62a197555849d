"""The Dataflow job, built for real by DataflowRunner with --dry_run (not submitted), and the
job's graph drawn by Beam's RenderRunner."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
from apache_beam.portability.api import beam_runner_api_pb2

from beam_etl.beam import launch
from beam_etl.beam import options as options_lib
from beam_etl.beam.preprocess import Preprocess

IMAGE = "us-central1-docker.pkg.dev/my-project/beam/beam-etl:2.77.0"
GBK = "beam:transform:group_by_key:v1"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def _argv(pets_dir, out):
    return ["--oxford_pets", str(pets_dir), "--output", str(out), "--image_size", "128"]


@pytest.fixture(scope="module")
def dataflow_pipeline(pets_dir, tmp_path_factory):
    """The job's pipeline proto, as DataflowRunner builds it for submission."""
    argv = _argv(pets_dir, tmp_path_factory.mktemp("dataflow_out")) + [
        "--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
        "--temp_location", "gs://my-bucket/tmp", "--sdk_container_image", IMAGE,
        "--dry_run=True", "--no_auth", "--sdk_location=container", "--job_name", "beam-etl-test"]
    config, pipeline_options = options_lib.parse_args(argv)
    pipeline = launch.pipeline_for(None, pipeline_options)  # (as the job's command builds it)
    _ = pipeline | "Preprocess" >> Preprocess(config)
    result = pipeline.run()
    return result.job.proto_pipeline


def _primitives(proto):
    return {tid: t for tid, t in proto.components.transforms.items() if not t.subtransforms}


def _producers(proto):
    return {pcoll: t for t in _primitives(proto).values() for pcoll in t.outputs.values()}


def _downstream(proto, start):
    """Primitive transforms fed, directly or not, by the outputs of ``start``."""
    primitives = list(_primitives(proto).values())
    frontier, seen, found = set(start.outputs.values()), set(), []
    while frontier:
        pcoll = frontier.pop()
        seen.add(pcoll)
        for transform in primitives:
            if pcoll in transform.inputs.values() and transform not in found:
                found.append(transform)
                frontier |= set(transform.outputs.values()) - seen
    return found


def _by_name(proto, name):
    (transform,) = [t for t in _primitives(proto).values() if t.unique_name.startswith(name)]
    return transform


def test_the_job_has_its_steps_and_runs_in_our_container(dataflow_pipeline):
    steps = {t.unique_name.removeprefix("Preprocess/") for t in dataflow_pipeline.components.transforms.values()
             if t.unique_name.count("/") == 1 and t.unique_name.startswith("Preprocess/")}
    assert {"ReadSources", "ProcessExamples", "WriteStatistics", "WriteShards", "WriteRejected",
            "WriteManifest"} <= steps
    environments = list(dataflow_pipeline.components.environments.values())
    assert environments
    for environment in environments:
        assert environment.urn == "beam:env:docker:v1"
        assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == IMAGE


def test_a_shuffle_follows_file_matching_before_decoding(dataflow_pipeline):
    producers = _producers(dataflow_pipeline)
    decode = _by_name(dataflow_pipeline, "Preprocess/ProcessExamples/DecodeResizeEncode")
    matches_reached = []

    def walk_up(transform, broken):
        for pcoll in transform.inputs.values():
            producer = producers.get(pcoll)
            if producer is None:
                continue
            if "/Match" in producer.unique_name and "/MatchAll" in producer.unique_name:
                matches_reached.append((producer.unique_name, broken))
                continue
            walk_up(producer, broken or producer.spec.urn == GBK)

    walk_up(decode, False)
    assert matches_reached, "decoding is not fed by file matching"
    assert all(broken for _, broken in matches_reached), matches_reached


def test_one_shuffle_pairs_the_files_and_makes_keys_unique(dataflow_pipeline):
    groupings = [t.unique_name for t in _primitives(dataflow_pipeline).values()
                 if t.spec.urn == GBK and t.unique_name.startswith("Preprocess/ReadSources/")
                 and "/MaybeReshuffle/" not in t.unique_name]  # beam.Create's own, of the 2 list files
    assert groupings == ["Preprocess/ReadSources/Pair/GroupByKey"]


def test_no_step_gathers_the_examples_into_one_element(dataflow_pipeline):
    decode = _by_name(dataflow_pipeline, "Preprocess/ProcessExamples/DecodeResizeEncode")
    groupings = {t.unique_name.removeprefix("Preprocess/") for t in _downstream(dataflow_pipeline, decode)
                 if t.spec.urn == GBK}
    # Examples are grouped by shard only, and the inputs' lines of the lineage index travel with
    # their originals (no grouping of their own); the statistics' sum groups partial sums (Beam
    # combines the shares where they are made), and so do the input counts; the rejected list and
    # the manifest's reports are small by construction.
    allowed = ("WriteShards/GroupByShard", "WriteStatistics/SumShares/", "WriteManifest/CountInputs",
               "WriteRejected/", "WriteManifest/CollectReports/")
    assert "WriteShards/GroupByShard" in groupings
    assert all(name.startswith(allowed) for name in groupings), groupings


def test_render_graph_draws_the_steps(pets_dir, tmp_path):
    assert shutil.which("dot"), "Graphviz's dot is needed: scripts/setup.sh installs it (apt-get install graphviz)"
    config, _ = options_lib.parse_args(_argv(pets_dir, tmp_path / "out"))
    svg, dot = tmp_path / "graph.svg", tmp_path / "graph.dot"
    launch.render_graph(config, str(svg))
    launch.render_graph(config, str(dot))
    assert "<svg" in svg.read_text()
    text = dot.read_text()
    for step in ("ReadSources", "ProcessExamples", "WriteShards", "WriteManifest"):
        assert step in text
    # Drawing runs nothing.
    assert not list((tmp_path / "out").glob("*.tfrecord")) and not (tmp_path / "out" / "manifest.json").exists()


def test_dry_run_touches_neither_the_output_nor_the_sources(tmp_path):
    """A CI check of a submission: no network (every HTTP request goes to a closed port), sources
    that do not exist, and an output that must not be created."""
    out = tmp_path / "out"
    closed = "http://127.0.0.1:9"
    temporary = tmp_path / "temporary"  # the command's temporary folder: left as it was found
    temporary.mkdir()
    env = dict(os.environ, TMPDIR=str(temporary), TF_CPP_MIN_LOG_LEVEL="2", http_proxy=closed, https_proxy=closed,
               HTTP_PROXY=closed, HTTPS_PROXY=closed, no_proxy="", NO_PROXY="")
    argv = ["--oxford_pets", "gs://no-such-bucket/pets", "--images", "gs://no-such-bucket/i/*.jpg",
            "--masks", "gs://no-such-bucket/m/*.png", "--output", str(out), "--image_size", "128",
            "--runner", "DataflowRunner", "--project", "my-project", "--region", "us-central1",
            "--temp_location", "gs://my-bucket/tmp", "--sdk_container_image", IMAGE, "--dry_run=True",
            "--no_auth", "--sdk_location=container", "--job_name", "beam-etl-dry-run"]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pipelines.preprocess", *argv], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == ("beam-etl: dry run: DataflowRunner built the job 'beam-etl-dry-run' and "
                                     "submitted nothing; nothing was read or written")
    assert not out.exists() and time.monotonic() - started < 120
    # Beam writes what it would stage for the container's workers, the pickled main session and the
    # list of this environment's packages, to a folder of its own that it never removes; its cache of
    # downloaded requirements is meant to stay (empty here: none to download).
    assert sorted(path.name for path in temporary.iterdir()) == ["beam-requirements-cache"]
    assert list((temporary / "beam-requirements-cache").iterdir()) == []
