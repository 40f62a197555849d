"""A killed run resumes: rerunning the same command into the folder it left reuses every outcome
it finished and ends byte for byte as a run that was never interrupted. The kills are real
SIGKILLs of the job in its own process (``BEAM_ETL_CRASH_AT``, :mod:`beam_etl.beam.crash`): half
way through the images, and at each step of the commit."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from beam_etl.beam import lease
from beam_etl.loader import verification
from beam_etl.output_layout import CACHE_DIR, CHANGES_FILE
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support.jobs import comparable, output_files

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
INPUTS = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sample_data.generate(str(root), num_images=INPUTS, seed=11)
    return root


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The output of a run that was never interrupted: (files, manifest)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "out"
    manifest = preprocess.run(_flags(data, out))
    return output_files(out), manifest


def _flags(root, out, *extra):
    return ["--images", str(root / "images" / "*.jpg"), "--masks", str(root / "annotations" / "trimaps" / "*.png"),
            "--output", str(out), "--image_size", "40x32", "--num_shards", "2", "--augment_copies", "1", *extra]


def _killed(root, out, crash_at, *extra, status: int = -9) -> subprocess.CompletedProcess:
    """The job killed (``status`` -9), or interrupted (130: a Ctrl-C), at ``crash_at``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", BEAM_ETL_CRASH_AT=crash_at)
    done = subprocess.run([sys.executable, "-m", "pipelines.preprocess", *_flags(root, out, *extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == status, done.stderr[-3000:]
    return done


def _changes_file(out) -> bytes | None:
    path = out / CHANGES_FILE
    return path.read_bytes() if path.exists() else None


def _assert_uninterrupted(out, manifest, uninterrupted):
    files, expected = uninterrupted
    assert output_files(out) == files
    assert comparable(manifest) == comparable(expected)
    assert comparable(json.loads((out / "manifest.json").read_text())) == comparable(expected)
    # What changed against the output replaced (none here: the uninterrupted run replaced none)
    assert manifest.get("changes") == expected.get("changes") and _changes_file(out) is None
    assert verification.verify(str(out)) == {}


@pytest.mark.parametrize("crash_at, decoded_again", [
    ("after_lease", INPUTS),  # nothing done yet
    ("outcomes:5", INPUTS - 5),  # half way through the images
    ("before_commit", 0),  # everything staged
    ("new_files_in", 0),  # mid-swap: the new files in, no manifest yet
    ("manifest_in", 0),  # committed; its clean-up left
])
def test_the_same_command_resumes_a_killed_run(data, uninterrupted, tmp_path, decodes, capsys, crash_at,
                                               decoded_again):
    out = tmp_path / "out"
    _killed(data, out, crash_at)
    holder = lease.read_holder(str(out))
    assert holder is not None and holder.local and lease.is_stale(holder, 48)
    manifest = preprocess.run(_flags(data, out))  # the same command: no --break_lease, no --overwrite
    assert f"resuming run {holder.run_id}" in capsys.readouterr().out
    assert len(decodes) == decoded_again
    assert manifest["run_id"] != holder.run_id and not (out / ".incomplete").exists()
    _assert_uninterrupted(out, manifest, uninterrupted)


def test_a_killed_replacement_resumes_with_its_command(data, uninterrupted, tmp_path, decodes):
    out = tmp_path / "out"
    preprocess.run(_flags(data, out, "--image_size", "24"))  # an earlier output, other flags
    _killed(data, out, "old_files_out", "--overwrite")
    decodes.clear()
    manifest = preprocess.run(_flags(data, out, "--overwrite"))
    assert decodes == []
    files, expected = uninterrupted
    assert output_files(out) == files and comparable(manifest) == comparable(expected)


def test_another_command_does_not_resume_a_dead_run(data, tmp_path, capsys):
    out = tmp_path / "out"
    _killed(data, out, "before_commit")
    with pytest.raises(SystemExit) as exited:
        preprocess.run(_flags(data, out, "--seed", "9"))
    assert exited.value.code == 2
    assert "no longer running; pass --break_lease" in capsys.readouterr().err
    assert (out / ".incomplete" / "lease.json").exists() and (out / CACHE_DIR).is_dir()
    manifest = preprocess.run(_flags(data, out, "--seed", "9", "--break_lease"))
    assert manifest["num_inputs"] == INPUTS


def test_a_lease_whose_job_may_run_elsewhere_is_never_resumed(data, tmp_path, capsys):
    """A launcher of a Dataflow job may die while its job goes on (and commits): its lease says
    so, and only --break_lease takes it."""
    out = tmp_path / "out"
    _killed(data, out, "before_commit")
    path = out / ".incomplete" / "lease.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "local": False}))
    with pytest.raises(SystemExit):
        preprocess.run(_flags(data, out))
    assert "pass --break_lease" in capsys.readouterr().err


def test_a_dead_launcher_whose_workers_still_run_is_not_resumed(data, uninterrupted, tmp_path, capsys):
    """Beam's worker processes can outlive a killed launcher: while one carries the run's id,
    the run is not over."""
    out = tmp_path / "out"
    _killed(data, out, "before_commit")
    holder = lease.read_holder(str(out))
    worker = subprocess.Popen(["sleep", "60"], env=dict(os.environ, **{lease.RUN_ENV: holder.run_id}))
    tag = f"{lease.RUN_ENV}={holder.run_id}".encode()
    deadline = time.monotonic() + 10
    while tag not in pathlib.Path(f"/proc/{worker.pid}/environ").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exec'd: a forked child shows its parent's environment first
    try:
        assert not lease.is_resumable(holder, holder.command)
        for flags in ((), ("--break_lease",)):  # (nor broken: the run is not gone)
            with pytest.raises(SystemExit):
                preprocess.run(_flags(data, out, *flags))
            assert f"processes of it run on this host (pid {worker.pid})" in capsys.readouterr().err
    finally:
        worker.kill()
        worker.wait()
    assert lease.is_resumable(holder, holder.command)
    manifest = preprocess.run(_flags(data, out))
    _assert_uninterrupted(out, manifest, uninterrupted)


def test_a_lease_from_another_pid_namespace_is_never_resumed(data, tmp_path, capsys):
    """A container with the host's name has pids of its own: a pid that is free here may be a
    live run there."""
    out = tmp_path / "out"
    _killed(data, out, "before_commit")
    path = out / ".incomplete" / "lease.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid_ns": "pid:[1]"}))
    with pytest.raises(SystemExit):
        preprocess.run(_flags(data, out))
    assert "pass --break_lease" in capsys.readouterr().err


# A replacement killed or interrupted once its manifest was in: the dead run had replaced the
# earlier output, and recorded what changed against it, before it died.

@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """``(link, first, second)``: the folder ``link`` names (always the same path, as the uris the
    lineage records are), pointed at the first version of the data or at the second (more
    images, some of them other images under the same names)."""
    root = tmp_path_factory.mktemp("versions")
    sample_data.generate(str(root / "first"), num_images=INPUTS, seed=11)
    sample_data.generate(str(root / "second"), num_images=INPUTS + 4, seed=11)
    return root / "data", root / "first", root / "second"


def _point(link: pathlib.Path, target: pathlib.Path) -> None:
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)


@pytest.fixture(scope="module")
def replaced(versions, tmp_path_factory):
    """``(earlier, expected)``: an output of the first version (a copy to start from), and the
    uninterrupted replacement of it by the second's: (files, manifest, changes file's bytes)."""
    link, first, second = versions
    earlier = tmp_path_factory.mktemp("earlier") / "out"
    _point(link, first)
    preprocess.run(_flags(link, earlier))
    out = tmp_path_factory.mktemp("replaced") / "out"
    shutil.copytree(earlier, out, symlinks=True)
    _point(link, second)
    manifest = preprocess.run(_flags(link, out, "--overwrite"))
    assert manifest["changes"]["added"] == 4 and manifest["changes"]["against_run"]
    return earlier, (output_files(out), manifest, _changes_file(out))


@pytest.mark.parametrize("crash_at, status, rerun_says", [
    ("manifest_in", -9, "resuming run"),  # killed: the same command resumes it
    ("manifest_in:SIGINT", 130, "is up to date"),  # a Ctrl-C: the run cleared up and said what it left
])
def test_a_replacement_that_died_after_its_commit_keeps_what_it_recorded_as_changed(
        versions, replaced, tmp_path, capsys, decodes, crash_at, status, rerun_says):
    """The rerun ends as the uninterrupted replacement did: the same files and the same record of
    what changed against the earlier output (the manifest's changes and lineage/changes.jsonl),
    not "nothing changed" against the dead run's own output."""
    link, _, second = versions
    earlier, (files, expected, expected_changes) = replaced
    out = tmp_path / "out"
    shutil.copytree(earlier, out, symlinks=True)
    _point(link, second)
    died = _killed(link, out, crash_at, "--overwrite", status=status)
    dead = json.loads((out / "manifest.json").read_text())
    assert dead["changes"] == expected["changes"]  # the record the user never saw
    capsys.readouterr()
    decodes.clear()
    manifest = preprocess.run(_flags(link, out, "--overwrite"))
    assert rerun_says in capsys.readouterr().out and decodes == []
    assert output_files(out) == files
    assert comparable(manifest) == comparable(expected)
    assert manifest["changes"] == expected["changes"] and _changes_file(out) == expected_changes
    assert json.loads((out / "manifest.json").read_text())["changes"] == expected["changes"]
    assert verification.verify(str(out)) == {} and not (out / ".incomplete").exists()
    if status == 130:  # (what the interrupted run said it left is what the rerun found)
        assert f"holds this run's complete output (run {dead['run_id']})" in died.stderr


def test_a_resumed_replacement_whose_inputs_changed_since_records_against_the_dead_run_s_output(
        versions, replaced, tmp_path):
    """Inputs changed after the dead run committed: its output was complete, and is what this run
    replaces (as if it had finished and this were a later run)."""
    link, first, second = versions
    earlier, _ = replaced
    out = tmp_path / "out"
    shutil.copytree(earlier, out, symlinks=True)
    _point(link, second)
    _killed(link, out, "manifest_in", "--overwrite")
    dead = json.loads((out / "manifest.json").read_text())
    _point(link, first)
    manifest = preprocess.run(_flags(link, out, "--overwrite"))
    assert manifest["changes"]["against_run"] == dead["run_id"] and manifest["changes"]["removed"] == 4
    assert manifest["changes"]["added"] == 0 and verification.verify(str(out)) == {}
