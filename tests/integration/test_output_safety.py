"""The job's promises about ``--output`` (README.md, "Guarantees"), tried as a careless user, a
hostile one and a crashing machine would: it deletes only what it wrote, takes paths literally,
replaces an output only once the new one is ready, lets one writer in at a time, and fails on a
wrong flag before anything is touched. Crashes are real SIGKILLs at named commit steps
(``BEAM_ETL_CRASH_AT``, :mod:`beam_etl.beam.crash`) of a job in its own process."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

from beam_etl.beam import commit, launch, lease, options, sink, up_to_date
from beam_etl.output_layout import CACHE_DIR, INCOMPLETE_DIR
from beam_etl import failure_report, loader
from beam_etl.loader import verification
from beam_etl.tools.sample_data import generate
from pipelines import preprocess
from tests.support import file_modes
from tests.support.jobs import job_process

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
FLAGS = ("--image_size", "24", "--num_shards", "2")
ZOMBIE = "3f0c2d9e5b7a41c8a6e2d1f0b9c8a7e6"  # a run that lost its lease


def _run(pets_dir, out, *extra) -> dict:
    return preprocess.run(["--oxford_pets", str(pets_dir), "--output", str(out), *FLAGS, *extra])


def _run_process(pets_dir, out, *extra, crash_at: str | None = None, temporary: pathlib.Path | None = None,
                 max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """The job as a user starts it, in its own process (:func:`tests.support.jobs.job_process`)."""
    return job_process(["--oxford_pets", str(pets_dir), "--output", str(out), *FLAGS, *extra], crash_at=crash_at,
                       temporary=temporary, max_file_bytes=max_file_bytes)


def _snapshot(directory: pathlib.Path, hidden: bool = True, cache: bool = True) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (``hidden=False``: not ``.incomplete/``;
    ``cache=False``: not the cache of outcomes, which a run grows whether or not it ends)."""
    def kept(name: str) -> bool:
        return (hidden or not name.startswith(INCOMPLETE_DIR + "/")) and (cache or not name.startswith(CACHE_DIR + "/"))

    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and kept(str(p.relative_to(directory)))}


def _without_cache(snapshot: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in snapshot.items() if not name.startswith(CACHE_DIR + "/")}


def _refused(capsys, call) -> str:
    """Runs ``call``, which must exit with status 2; returns what it printed to stderr."""
    with pytest.raises(SystemExit) as exited:
        call()
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def earlier(pets_dir, tmp_path_factory):
    """A complete output (statistics included) to copy and try to destroy; its snapshot."""
    out = tmp_path_factory.mktemp("earlier") / "out"
    _run(pets_dir, out)
    return out, _snapshot(out)


def _copy(earlier, tmp_path) -> pathlib.Path:
    out = tmp_path / "out"
    shutil.copytree(earlier[0], out)
    return out


# 1. It deletes only what it wrote --------------------------------------------------------------

def test_user_files_beside_and_inside_the_output_survive(pets_dir, tmp_path):
    out = tmp_path / "out"
    (out / "photos").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "photos" / "cat.jpg").write_bytes(b"not yours")
    _run(pets_dir, out)  # no name the job writes is there: allowed, and nothing of the user's moves
    manifest = _run(pets_dir, out, "--overwrite", "--no_statistics")
    assert (out / "notes.txt").read_text() == "mine" and (out / "photos" / "cat.jpg").read_bytes() == b"not yours"
    assert not (out / "transform_fn" / "saved_model.pb").exists()  # the earlier run's: replaced
    assert manifest["statistics"] is None and manifest["statistics_absent"] == "--no_statistics"
    assert verification.verify(str(out)) == {}  # the user's files lie beside the output, not in its folders


def test_overwrite_refuses_a_folder_that_beam_etl_did_not_write(pets_dir, tmp_path, capsys):
    out = tmp_path / "theirs"
    (out / "rejected").mkdir(parents=True)
    (out / "train-00000-of-00002.tfrecord").write_bytes(b"someone's shard")
    (out / "rejected" / "list.jsonl").write_text("someone's list")
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert "is not a beam-etl output" in error and "train-00000-of-00002.tfrecord" in error
    error = _refused(capsys, lambda: _run(pets_dir, out))  # (--overwrite would not help: it is not said)
    assert "is not a beam-etl output" in error and "rejected/list.jsonl" in error and "pass --overwrite" not in error
    assert _snapshot(out) == before


@pytest.mark.parametrize("edit", ["a manifest of few words", "an earlier output's manifest, its counts edited"])
def test_overwrite_takes_no_manifest_the_readers_refuse_for_the_job_s(earlier, pets_dir, tmp_path, capsys, edit):
    """A manifest.json that only has the keys of one (``format_version``, ``splits``) made the
    folder's files the job's to replace: --overwrite deleted every shard-named file and every
    file under transform_fn/ that the readers' own checks would never have taken for an output's."""
    if edit == "a manifest of few words":
        out = tmp_path / "theirs"
        (out / "transform_fn" / "variables").mkdir(parents=True)
        (out / "train-00000-of-00001.tfrecord").write_bytes(b"someone's shard")
        (out / "transform_fn" / "saved_model.pb").write_bytes(b"someone's model")
        (out / "transform_fn" / "variables" / "variables.index").write_bytes(b"someone's index")
        (out / "manifest.json").write_text(json.dumps(
            {"format_version": 1, "splits": {"train": {"files": ["train-00000-of-00001.tfrecord"]}}}))
    else:
        out = _copy(earlier, tmp_path)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["num_inputs"] += 1
        (out / "manifest.json").write_text(json.dumps(manifest))
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert "is not a beam-etl output" in error and "manifest.json" in error, error
    assert _snapshot(out) == before


def test_a_folder_named_incomplete_without_a_lease_is_not_the_jobs(pets_dir, tmp_path, capsys):
    out = tmp_path / "out"
    (out / ".incomplete").mkdir(parents=True)
    (out / ".incomplete" / "draft.txt").write_text("someone's")
    assert ".incomplete/draft.txt" in _refused(capsys, lambda: _run(pets_dir, out, "--no_statistics"))
    assert "is not a beam-etl output" in _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert _snapshot(out) == {".incomplete/draft.txt": b"someone's"}


def test_overwrite_never_deletes_a_file_in_incomplete_that_no_run_holds(earlier, pets_dir, tmp_path, capsys):
    """Without a lease, ``.incomplete/`` is not a run's: --overwrite replaces the earlier output's
    files, not what somebody put there."""
    out = _copy(earlier, tmp_path)
    (out / ".incomplete").mkdir()
    (out / ".incomplete" / "draft.txt").write_text("someone's")
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert ".incomplete/draft.txt, which no run of beam-etl holds" in error
    assert _snapshot(out) == before


@pytest.mark.parametrize("name", [".incomplete", "metadata"])
def test_a_file_where_the_job_keeps_a_folder_is_refused_at_launch(earlier, pets_dir, tmp_path, capsys, name):
    out = _copy(earlier, tmp_path)
    shutil.rmtree(out / name, ignore_errors=True)
    (out / name).write_text("someone's")
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert f"holds a file named {name!r} where the job keeps a folder" in error
    assert _snapshot(out) == before


def test_a_failed_run_into_a_new_nested_folder_leaves_no_folder_it_made(pets_dir, tmp_path):
    out = tmp_path / "new" / "a" / "b" / "out"
    failed = _run_process(pets_dir, out, crash_at="after_lease:SIGINT")
    assert failed.returncode == 130, failed.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_a_runs_own_leftovers_without_a_lease_are_cleared_by_overwrite(earlier, pets_dir, tmp_path, capsys):
    """A run killed while it broke a dead run's lease leaves that run's .incomplete/ with no lease:
    only files a run writes there, which --overwrite clears (what is not a run's is refused)."""
    out = _copy(earlier, tmp_path)
    for name in ("spill/a.bin", "staged/0a1b/train-00000-of-00002.tfrecord", "tmp/0123", "progress/w.json",
                 "lease.json.broken-by-0a1b"):
        (out / ".incomplete" / name).parent.mkdir(parents=True, exist_ok=True)
        (out / ".incomplete" / name).write_bytes(b"a dead run's")
    assert "pass --overwrite" in _refused(capsys, lambda: _run(pets_dir, out))
    manifest = _run(pets_dir, out, "--overwrite")
    assert manifest["num_inputs"] > 0 and not (out / ".incomplete").exists()
    assert verification.verify(str(out)) == {}


@pytest.mark.parametrize("name", ["train-00002-of-00003.tfrecord", "metadata/notes.txt", "rejected/mine.jsonl",
                                  "transform_fn/assets/extra", "transformed_metadata/x"])
def test_overwrite_never_replaces_or_leaves_a_file_no_manifest_lists(earlier, pets_dir, tmp_path, capsys, name):
    """A name the new run may write would be refused half way; any other, in a folder of the
    job's, would be left beside the new output, whose manifest would not describe its folder."""
    out = _copy(earlier, tmp_path)
    (out / name).write_bytes(b"not listed anywhere")
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite", "--num_shards", "3"))
    assert f"{name}, which its manifest.json does not list" in error
    assert _snapshot(out) == before  # the earlier output stands, the stranger too


def test_a_manifest_naming_files_outside_the_output_cannot_make_the_job_delete_them(earlier, pets_dir,
                                                                                   tmp_path, capsys):
    """Such a manifest is refused by the readers' checks, and so is not one the job replaces
    (what it lists is never taken for the job's: :func:`commit.owned_files` drops such names too)."""
    out = _copy(earlier, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("outside")
    listed = json.loads((out / "manifest.json").read_text())
    listed["files"]["../victim.txt"] = {"bytes": 7, "crc32c": "0"}
    listed["files"]["/etc/hostname"] = {"bytes": 7, "crc32c": "0"}
    (out / "manifest.json").write_text(json.dumps(listed))
    before = _snapshot(out)
    assert "is not a beam-etl output" in _refused(capsys, lambda: _run(pets_dir, out, "--overwrite", "--no_statistics"))
    assert victim.read_text() == "outside" and _snapshot(out) == before
    assert commit.owned_files(str(out), listed) == commit.owned_files(str(earlier[0]), json.loads(
        (earlier[0] / "manifest.json").read_text()))


@pytest.mark.parametrize("linked", ["lineage", "metadata", "transform_fn/variables", ".incomplete"])
def test_a_folder_of_the_output_that_is_a_link_is_refused_and_nothing_behind_it_moves(
        earlier, pets_dir, tmp_path, capsys, linked):
    """A user archives a folder of the output and leaves a link in its place: the job must not
    move, delete or write anything through it (it is outside --output)."""
    out = _copy(earlier, tmp_path)
    archive = tmp_path / "archive"
    if (out / linked).exists():
        shutil.move(out / linked, archive)
    else:
        archive.mkdir()
    (archive / "mine.txt").write_text("outside")
    (out / linked).symlink_to(archive, target_is_directory=True)
    before, archived = _snapshot(out), _snapshot(archive)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert f"{linked} is a link" in error and "--output" in error
    assert _snapshot(out) == before and _snapshot(archive) == archived
    if linked != ".incomplete":
        (out / linked).unlink()
        shutil.copytree(archive, out / linked)
        (out / linked / "mine.txt").unlink()
        assert verification.verify(str(out)) == {}  # the earlier output, whole again


@pytest.mark.parametrize("unwritable", ["the folder it is made in", "the output", "metadata", "transform_fn/variables"])
def test_an_output_this_user_cannot_write_is_refused_before_anything_is_touched(earlier, pets_dir, tmp_path, unwritable):
    """Another user's output (or a folder of it) that this user may not write to: the run would
    fail half way, leaving its files and lease behind, or fail to replace the earlier output."""
    out = _copy(earlier, tmp_path)
    folder = {"the folder it is made in": tmp_path, "the output": out}.get(unwritable, out / unwritable)
    target = tmp_path / "new" if unwritable == "the folder it is made in" else out
    before = _snapshot(tmp_path)
    folder.chmod(0o555)
    try:
        refused = file_modes.run_module("pipelines.preprocess", "--oxford_pets", str(pets_dir),
                                        "--output", str(target), *FLAGS, "--overwrite")
    finally:
        folder.chmod(0o755)
    assert refused.returncode == 2, refused.stderr
    assert f"--output {str(target)!r}: this user may not write to {folder}" in refused.stderr, refused.stderr
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files takes root (CI runs as root)")
def test_another_users_output_in_a_folder_with_the_sticky_bit_is_refused_before_anything_is_touched(
        earlier, pets_dir, tmp_path):
    """Every folder writable, but the output's files another user's and the folder sticky (as
    /tmp): the run could not move them at the commit."""
    out = _copy(earlier, tmp_path)
    for path in [out, *out.rglob("*")]:
        os.chown(path, 4321, 4321, follow_symlinks=False)
        if path.is_dir():
            path.chmod(0o777)
    out.chmod(0o1777)
    before = _snapshot(out)
    refused = file_modes.run_module("pipelines.preprocess", "--oxford_pets", str(pets_dir),
                                    "--output", str(out), *FLAGS, "--overwrite", "--no_cache")
    assert refused.returncode == 2, refused.stderr
    assert "this user may not move or delete" in refused.stderr and "sticky bit" in refused.stderr, refused.stderr
    assert _snapshot(out) == before


def test_a_link_made_during_the_run_is_refused_at_the_commit(earlier, pets_dir, tmp_path):
    out = _copy(earlier, tmp_path)
    archive = tmp_path / "archive"
    shutil.move(out / "lineage", archive)
    (out / "lineage").symlink_to(archive, target_is_directory=True)
    archived = _snapshot(archive)
    manifest = json.loads((out / "manifest.json").read_text())
    run_id = lease.take(str(out)).run_id  # (a run that began before the link was made)
    with pytest.raises(RuntimeError, match="lineage is a link"):
        commit.commit(str(out), run_id, {**manifest, "run_id": run_id},
                      [name for name in manifest["files"] if name.startswith("lineage/")])
    assert _snapshot(archive) == archived


# 2. Paths are paths -----------------------------------------------------------------------------

def test_glob_characters_in_output_and_oxford_root_are_literal(earlier, tmp_path, capsys):
    runs = tmp_path / "runs"
    for sibling in ("exp1", "exp2"):
        shutil.copytree(earlier[0], runs / sibling)
    siblings = {name: _snapshot(runs / name) for name in ("exp1", "exp2")}
    data, decoy = tmp_path / "ds[1] ü*?", tmp_path / "ds1 ü*?"
    generate(str(data), num_images=6, seed=5)
    generate(str(decoy), num_images=9, seed=6)
    out = runs / "exp[12]"
    error = _refused(capsys, lambda: _run(data, out))  # TensorFlow could not load the graph there
    assert f"--output {str(out)!r} holds a glob character" in error and "--no_statistics" in error
    first = _run(data, out, "--no_statistics")
    second = _run(data, out, "--overwrite", "--no_statistics")
    assert first["num_inputs"] == second["num_inputs"] == 6  # not the decoy's 9 as well
    assert {name: _snapshot(runs / name) for name in ("exp1", "exp2")} == siblings
    assert verification.verify(str(out)) == {}


# 3. A replacement, not a deletion ---------------------------------------------------------------

@pytest.mark.parametrize("flag", [("--shard_size_mb", "nan"), ("--runner", "DirectRunnr"),
                                  ("--direct_num_workers", "-3"), ("--render_graph", "/no/such/folder/g.svg")])
def test_a_bad_flag_with_overwrite_leaves_the_earlier_output(earlier, pets_dir, tmp_path, capsys, flag):
    out = _copy(earlier, tmp_path)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite", *flag))
    assert flag[0] in error and flag[1] in error
    assert _snapshot(out) == earlier[1]


@pytest.mark.parametrize("crash_at", ["before_commit", "old_manifest_out", "old_files_out", "new_files_in"])
def test_a_run_killed_before_its_manifest_is_in_leaves_the_earlier_output(earlier, pets_dir, tmp_path,
                                                                          crash_at):
    out = _copy(earlier, tmp_path)
    temporary = tmp_path / "temporary"
    temporary.mkdir()
    killed = _run_process(pets_dir, out, "--overwrite", "--image_size", "32", crash_at=crash_at, temporary=temporary)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # (Beam's own folder for the pipeline is removed when it is made: the job uses none)
    assert not [path.name for path in temporary.iterdir() if path.name.startswith("beam-pipeline-temp")]
    if crash_at == "before_commit":
        assert _snapshot(out, hidden=False, cache=False) == _without_cache(earlier[1])  # untouched until the swap
        assert verification.verify(str(out)) == {}
    else:  # mid-swap: no manifest, so a reader refuses the folder instead of reading a mix
        with pytest.raises(loader.IncompleteOutputError):
            loader.make_dataset(str(out), "train", 4)
    # The next run takes the lease of the dead one and rolls its swap back first.
    holder = lease.read_holder(str(out))
    assert holder is not None and lease.is_stale(holder, 48)
    again = _run_process(pets_dir, out, "--overwrite", "--break_lease", crash_at="after_lease")
    assert again.returncode == -9, again.stderr[-2000:]
    assert _snapshot(out, hidden=False, cache=False) == _without_cache(earlier[1])
    assert verification.verify(str(out)) == {}


@pytest.mark.parametrize("crash_at", ["lease_taken:SIGINT", "after_lease:SIGINT", "before_commit:SIGINT"])
def test_ctrl_c_leaves_the_earlier_output_and_no_lease(earlier, pets_dir, tmp_path, crash_at):
    out = _copy(earlier, tmp_path)
    interrupted = _run_process(pets_dir, out, "--overwrite", crash_at=crash_at)
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stderr
    assert interrupted.stderr.strip().splitlines()[-1].startswith("beam-etl: interrupted. ")
    # No .incomplete/, no lease: the next run just runs. (The cache may have grown: digests of
    # inputs that had settled since the earlier run.)
    assert _snapshot(out, cache=False) == _without_cache(earlier[1])


@pytest.mark.parametrize("crash_at", ["lease_taken:SIGINT", "after_lease:SIGINT", "before_commit:SIGINT"])
def test_ctrl_c_into_a_new_folder_leaves_no_folder_or_only_its_cache(pets_dir, tmp_path, crash_at):
    out = tmp_path / "new"
    interrupted = _run_process(pets_dir, out, crash_at=crash_at)
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stderr
    if not crash_at.startswith("before_commit"):  # nothing computed yet: no folder, as before the run
        assert not out.exists()
    else:  # what it computed is kept, for the next run: nothing else
        assert {p.name for p in out.iterdir()} == {CACHE_DIR}


def test_the_new_files_are_on_disk_before_the_swap_and_the_swap_before_the_old_files_go(
        earlier, pets_dir, tmp_path, monkeypatch):
    """A power cut cannot be staged here, so the order of the system calls is what is checked:
    every new file's bytes are synced before the earlier output starts to move, and the folders
    the new files were renamed into before anything of the earlier output is deleted."""
    out = _copy(earlier, tmp_path)
    events = []
    real_fsync, real_rename, real_remove = os.fsync, os.rename, os.remove
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "rename", lambda a, b: (events.append(("rename", str(a), str(b))), real_rename(a, b))[1])
    monkeypatch.setattr(os, "remove", lambda a: (events.append(("remove", str(a))), real_remove(a))[1])
    manifest = _run(pets_dir, out, "--overwrite", "--num_shards", "3")
    staged, previous = str(out / ".incomplete" / "staged" / manifest["run_id"]), str(out / ".incomplete" / "previous")
    first_out = next(i for i, e in enumerate(events) if e[0] == "rename" and e[1] == str(out / "manifest.json"))
    synced_before = {e[1] for e in events[:first_out] if e[0] == "fsync"}
    assert {f"{staged}/{name}" for name in [*manifest["files"], "manifest.json"]} <= synced_before
    journal_in = next(i for i, e in enumerate(events) if e[0] == "rename" and e[2].endswith("/.incomplete/commit.json"))
    assert str(out / ".incomplete") in {e[1] for e in events[journal_in:first_out] if e[0] == "fsync"}
    manifest_in = next(i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(out / "manifest.json"))
    first_delete = next(i for i, e in enumerate(events) if e[0] == "remove" and e[1].startswith(previous + "/"))
    folders = {str(out), *(str((out / name).parent) for name in manifest["files"])}
    assert folders <= {e[1] for e in events[manifest_in:first_delete] if e[0] == "fsync"}
    assert verification.verify(str(out)) == {}


@pytest.mark.parametrize("crash_at", ["old_manifest_out", "old_files_out", "new_files_in"])
def test_break_lease_without_overwrite_puts_back_the_earlier_output_and_replaces_nothing(
        earlier, pets_dir, tmp_path, capsys, crash_at):
    """After a swap killed half way, a run of another command that breaks the dead run's lease
    rolls the swap back; without --overwrite it then stops, having replaced nothing."""
    out = _copy(earlier, tmp_path)
    killed = _run_process(pets_dir, out, "--overwrite", "--image_size", "32", crash_at=crash_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    error = _refused(capsys, lambda: _run(pets_dir, out, "--break_lease"))  # no --overwrite
    assert "pass --overwrite" in error
    assert _snapshot(out, cache=False) == _without_cache(earlier[1])  # rolled back, and the lease released


@pytest.mark.parametrize("crash_at", ["old_manifest_out", "new_files_in"])
def test_a_swap_killed_under_the_earlier_staging_layout_is_rolled_back(earlier, pets_dir, tmp_path, crash_at):
    """A commit killed by a version of the job that staged every run's files in
    .incomplete/staged/ itself (a journal without "staged"), then rolled back by this one."""
    out = _copy(earlier, tmp_path)
    killed = _run_process(pets_dir, out, "--overwrite", "--image_size", "32", crash_at=crash_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    journal = json.loads((out / INCOMPLETE_DIR / "commit.json").read_text())
    staged = out / INCOMPLETE_DIR / "staged"
    for path in sorted((staged / journal["run_id"]).rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            (staged / path.relative_to(staged / journal["run_id"])).parent.mkdir(parents=True, exist_ok=True)
            path.rename(staged / path.relative_to(staged / journal["run_id"]))
    journal.pop("staged", None)
    (out / INCOMPLETE_DIR / "commit.json").write_text(json.dumps(journal))
    assert commit.rollback(str(out))
    assert _snapshot(out, hidden=False, cache=False) == _without_cache(earlier[1])
    assert verification.verify(str(out)) == {}


def test_a_run_killed_after_its_manifest_is_in_has_replaced_the_output(earlier, pets_dir, tmp_path):
    out = _copy(earlier, tmp_path)
    killed = _run_process(pets_dir, out, "--overwrite", "--image_size", "32", crash_at="manifest_in")
    assert killed.returncode == -9, killed.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["height"] == 32 and verification.verify(str(out)) == {}
    images, _ = next(iter(loader.make_dataset(str(out), "train", 2)))
    assert images.shape[1:3] == (32, 32)


def test_ctrl_c_after_the_commit_says_the_output_is_the_run_s(earlier, pets_dir, tmp_path):
    """Once its manifest is in, an interrupted run has replaced the output: it says so (not that
    the earlier output is put back), clears what is left and releases its lease."""
    out = _copy(earlier, tmp_path)
    interrupted = _run_process(pets_dir, out, "--overwrite", "--image_size", "32", crash_at="manifest_in:SIGINT")
    assert interrupted.returncode == 130 and "Traceback" not in interrupted.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["height"] == 32 and verification.verify(str(out)) == {}
    assert interrupted.stderr.strip().splitlines()[-1] == (
        f"beam-etl: interrupted after the commit: --output {str(out)!r} holds this run's complete output "
        f"(run {manifest['run_id']}), and the same command again finds it up to date; its lease is released.")
    assert not (out / INCOMPLETE_DIR).exists()


def test_a_failure_after_the_commit_says_the_output_is_the_run_s(earlier, pets_dir, tmp_path, monkeypatch):
    out = _copy(earlier, tmp_path)

    def fails(*_):  # (what a run does once its output is committed: its summary)
        raise RuntimeError("the summary failed")

    monkeypatch.setattr(launch, "summarize", fails)
    with pytest.raises(failure_report.AfterCommit) as failed:
        _run(pets_dir, out, "--overwrite", "--image_size", "32")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["image"]["height"] == 32 and verification.verify(str(out)) == {}
    assert str(failed.value) == (f"the summary failed, after the commit: --output {str(out)!r} holds this "
                                 f"run's complete output (run {manifest['run_id']}), and the same command again "
                                 "finds it up to date; its lease is released")
    assert lease.read_holder(str(out)) is None and not (out / INCOMPLETE_DIR).exists()


def test_a_run_that_cannot_record_its_up_to_date_state_still_ends_well_and_says_so(earlier, pets_dir, tmp_path,
                                                                                    monkeypatch, capsys):
    """The state only spares the same command's next run the job: the output is complete."""
    out = _copy(earlier, tmp_path)

    def fails(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(up_to_date.Snapshot, "record", fails)
    written = _run(pets_dir, out, "--overwrite", "--image_size", "32")
    assert written["run_id"] == json.loads((out / "manifest.json").read_text())["run_id"]
    assert verification.verify(str(out)) == {} and lease.read_holder(str(out)) is None
    said = capsys.readouterr().err
    assert (f"note: --output {str(out)!r} is complete, but the state by which the same command finds it up to date "
            "could not be written (No space left on device): that command runs the job again") in said


def test_a_failing_run_cleans_up_and_keeps_the_earlier_output(earlier, pets_dir, tmp_path):
    out = _copy(earlier, tmp_path)
    with pytest.raises(Exception, match="max_reject_fraction"):
        _run(pets_dir, out, "--overwrite", "--max_reject_fraction", "0")
    assert _snapshot(out) == earlier[1]  # no .incomplete/ left, no lease
    assert not (out / ".incomplete").exists()


def test_a_run_the_disk_refuses_says_which_file_and_keeps_the_earlier_output(earlier, pets_dir, tmp_path):
    """A full disk (here: a file size limit the cache's segment outgrows) fails the run with one
    message naming the file it could not write, and leaves the earlier output as it was."""
    out = _copy(earlier, tmp_path)
    failed = _run_process(pets_dir, out, "--overwrite", "--no_statistics", "--image_size", "32",
                          max_file_bytes=30000)  # (a size the cache holds no outcome of)
    assert failed.returncode == 1, failed.stderr[-2000:]
    message = [line for line in failed.stderr.splitlines() if line.startswith("beam-etl: failed: ")]
    assert len(message) == 1 and "File too large: " in message[0], failed.stderr[-2000:]
    assert f"'{out / CACHE_DIR}/outcomes/" in message[0] and message[0].endswith(".seg'")
    os.remove(failed.stderr.split("the traceback is in ")[1].split(";")[0])
    assert _snapshot(out, cache=False) == _without_cache(earlier[1])  # no .incomplete/ left, no lease
    assert verification.verify(str(out)) == {}


def test_a_staged_file_written_over_after_its_writer_is_never_published(earlier, pets_dir, tmp_path, monkeypatch):
    """Something else in .incomplete/ (another program, a hand) changes a staged shard after its
    writer reported it: the commit refuses to publish it under the manifest."""
    out = _copy(earlier, tmp_path)
    real_check = lease.check

    def written_over(output, run_id):  # (the commit's first step)
        with open(out / ".incomplete" / "staged" / run_id / "train-00000-of-00002.tfrecord", "ab") as shard:
            shard.write(b"another run's bytes")
        real_check(output, run_id)

    monkeypatch.setattr(lease, "check", written_over)
    with pytest.raises(Exception, match="train-00000-of-00002.tfrecord in --output .* holds .* bytes, not the"):
        _run(pets_dir, out, "--overwrite", "--image_size", "32")
    assert _snapshot(out, cache=False) == _without_cache(earlier[1])


def test_a_run_that_lost_its_lease_never_writes_over_the_staged_files_of_the_run_holding_it(
        earlier, pets_dir, tmp_path, monkeypatch):
    """A run whose lease was broken (its laptop asleep past --lease_timeout_hours) wakes up and
    stages a shard again, same name, same size, other bytes, while the run that took the lease
    over commits: a run stages in a folder of its own, so the other's bytes are never published."""
    out = _copy(earlier, tmp_path)
    real_check = lease.check
    name = "train-00000-of-00002.tfrecord"

    def a_zombie_stages(output, run_id):  # (the commit's first step, and its checks during the swap)
        if not (out / INCOMPLETE_DIR / "staged" / ZOMBIE).exists():
            [staged] = (out / INCOMPLETE_DIR / "staged").rglob(name)
            sink.stage_file(output, ZOMBIE, name, [b"z" * staged.stat().st_size])
        real_check(output, run_id)

    monkeypatch.setattr(lease, "check", a_zombie_stages)
    manifest = _run(pets_dir, out, "--overwrite", "--image_size", "32")
    assert manifest["files"][name]["bytes"] == (out / name).stat().st_size
    assert b"zzzzzzzz" not in (out / name).read_bytes() and verification.verify(str(out)) == {}
    assert not (out / INCOMPLETE_DIR).exists()  # the other run's folder cleared with the rest


def _lease_taken_at(point: str, out, monkeypatch) -> lease.Holder:
    """Another run (on another host) takes the lease on ``out`` when this process's commit
    reaches ``point`` (:data:`beam_etl.beam.crash.CRASH_POINTS`); returns its lease."""
    taker = lease.Holder(run_id="0b5e55ed", host="another-host", pid=1, process_start="", started=time.time())
    real_crash_point = commit.crash_point

    def lease_taken_meanwhile(name, count=None):
        if name == point:
            (out / INCOMPLETE_DIR / "lease.json").write_text(json.dumps(taker.__dict__))
        real_crash_point(name, count)

    monkeypatch.setattr(commit, "crash_point", lease_taken_meanwhile)
    return taker


def test_a_run_that_lost_its_lease_as_its_commit_began_moves_nothing(earlier, pets_dir, tmp_path, monkeypatch):
    """A run's host sleeps once its commit has begun (journal written, nothing moved yet), past
    --lease_timeout_hours; another run takes the lease. When it wakes it must move nothing:
    the earlier output (or the other run's) stays whole, and it leaves no staged file behind."""
    out = _copy(earlier, tmp_path)
    taker = _lease_taken_at("before_commit", out, monkeypatch)
    with pytest.raises(lease.LeaseError, match="lost its lease"):
        _run(pets_dir, out, "--overwrite", "--image_size", "32")
    assert _snapshot(out, hidden=False, cache=False) == _without_cache(earlier[1])
    assert verification.verify(str(out)) == {} and lease.read_holder(str(out)) == taker
    assert not list((out / INCOMPLETE_DIR / "staged").rglob("*"))  # its own staged files removed


def test_a_run_that_lost_its_lease_mid_swap_moves_nothing_more(earlier, pets_dir, tmp_path, monkeypatch):
    """The same, asleep once the earlier manifest is out: on waking (the lease is checked again
    before a move once a second has passed on the wall clock; here, before every move) it moves
    nothing more, and the run that took the lease rolls the swap back."""
    out = _copy(earlier, tmp_path)
    _lease_taken_at("old_manifest_out", out, monkeypatch)
    monkeypatch.setattr(commit, "LEASE_RECHECK_S", 0.0)
    with pytest.raises(lease.LeaseError, match="lost its lease"):
        _run(pets_dir, out, "--overwrite", "--image_size", "32")
    moved = sorted(p.name for p in (out / INCOMPLETE_DIR / "previous").rglob("*") if p.is_file())
    assert moved == ["manifest.json"]  # nothing after the lease was lost
    assert commit.rollback(str(out))  # what the run that took the lease does first
    assert _snapshot(out, hidden=False, cache=False) == _without_cache(earlier[1])


# 4. One writer at a time ------------------------------------------------------------------------

def test_a_second_run_refuses_while_the_first_holds_the_lease(earlier, pets_dir, tmp_path, capsys):
    out = _copy(earlier, tmp_path)
    holder = lease.take(str(out))  # this (living) process is the first run
    graph = tmp_path / "graph.dot"  # (drawn once the run holds the output, not before it is refused)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite", "--break_lease", "--render_graph", str(graph)))
    assert f"leased by run {holder.run_id} (pid {os.getpid()}" in error and "another run is writing" in error
    assert lease.read_holder(str(out)) == holder and not graph.exists()
    with pytest.raises(lease.LeaseError, match="lost its lease"):
        lease.check(str(out), "some-other-run")
    lease.release(str(out), holder.run_id)
    assert _snapshot(out) == earlier[1]


def test_a_stale_lease_is_broken_only_when_asked(earlier, pets_dir, tmp_path, capsys):
    out = _copy(earlier, tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = lease.Holder(run_id="dead-run", host=lease.this_process().host, pid=int(gone.stdout),
                        process_start="", started=time.time())
    (out / ".incomplete").mkdir()
    (out / ".incomplete" / "lease.json").write_text(json.dumps(dead.__dict__))
    (out / ".incomplete" / "spill").mkdir()
    (out / ".incomplete" / "spill" / "left.bin").write_bytes(b"left behind")
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite"))
    assert "leased by run dead-run" in error and "no longer running; pass --break_lease" in error
    manifest = _run(pets_dir, out, "--overwrite", "--break_lease")
    assert manifest["run_id"] != "dead-run" and not (out / ".incomplete").exists()
    assert verification.verify(str(out)) == {}


def test_break_lease_never_takes_over_a_run_alive_on_this_host(earlier, pets_dir, tmp_path, capsys):
    """--lease_timeout_hours is for runs elsewhere, which cannot be seen from here: a run whose
    process runs on this host holds its lease however old it is."""
    out = _copy(earlier, tmp_path)
    holder = dataclasses.replace(lease.this_process(local=True), started=time.time() - 7200)  # this process
    (out / ".incomplete").mkdir()
    (out / ".incomplete" / "lease.json").write_text(json.dumps(holder.__dict__))
    before = _snapshot(out)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--overwrite", "--break_lease", "--lease_timeout_hours", "1"))
    assert f"leased by run {holder.run_id} (pid {os.getpid()}" in error and "another run is writing" in error
    assert _snapshot(out) == before
    elsewhere = dataclasses.replace(holder, host="another-host")
    assert lease.is_stale(elsewhere, 1.0) and not lease.is_stale(elsewhere, 3.0)
    assert not lease.is_stale(holder, 1.0)
    in_a_container = dataclasses.replace(holder, pid_ns="pid:[1]")  # its pids are not this namespace's
    assert lease.is_stale(in_a_container, 1.0) and not lease.is_stale(in_a_container, 3.0)
    assert not lease.is_stale(dataclasses.replace(holder, pid_ns=""), 1.0)  # (a lease from before pid_ns)


def test_two_runs_started_together_leave_one_consistent_output(earlier, pets_dir, tmp_path):
    out = _copy(earlier, tmp_path)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    runs = [subprocess.Popen([sys.executable, "-m", "pipelines.preprocess", "--oxford_pets", str(pets_dir),
                              "--output", str(out), "--overwrite", "--num_shards", "2", "--image_size", size],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for size in ("32", "48")]
    results = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
    assert any(code == 0 for code, _ in results), results
    for code, stderr in results:
        assert code == 0 or (code == 2 and "leased by run" in stderr), stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert verification.verify(str(out)) == {} and not (out / ".incomplete").exists()
    images, masks = next(iter(loader.make_dataset(str(out), "train", 2)))
    side = manifest["image"]["height"]
    assert side in (32, 48) and images.shape[1:3] == masks.shape[1:3] == (side, side)


# 7. Flags fail at launch ------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (("--shard_size_mb", "nan"), "--shard_size_mb: invalid value 'nan'"),
    (("--shard_size_mb", "inf"), "--shard_size_mb: invalid value 'inf'"),
    (("--shard_size_mb", "1e-9"), "--shard_size_mb: invalid value '1e-9': must be within [0.001, 1e+06]"),
    (("--val_fraction", "nan"), "--val_fraction: invalid value 'nan'"),
    (("--max_reject_fraction", "-0.5"), "--max_reject_fraction: invalid value '-0.5'"),
    (("--direct_num_workers", "-3"), "--direct_num_workers must be 0 (one per core) or more, got -3"),
    (("--runner", "DirectRunnr"), "--runner 'DirectRunnr' is not a runner Beam knows"),
    (("--render_graph", "/no/such/folder/g.svg"), "--render_graph '/no/such/folder/g.svg': folder"),
    (("--lease_timeout_hours", "0"), "--lease_timeout_hours: invalid value '0'"),
    (("--no_wait_until_finish",), "--no_wait_until_finish: the job ends with this process (the DirectRunner)"),
    (("--image_size", "0"), "--image_size: invalid value '0'"),
])
def test_wrong_flags_exit_2_naming_flag_and_value_before_anything_is_written(pets_dir, tmp_path, capsys,
                                                                             flags, named):
    out = tmp_path / "out"
    error = _refused(capsys, lambda: _run(pets_dir, out, *flags))
    assert named in error
    assert not out.exists()


def test_a_file_uri_output_is_refused_naming_the_local_path(pets_dir, tmp_path, capsys):
    """Beam has no file:// filesystem: the run failed after all its image work."""
    error = _refused(capsys, lambda: _run(pets_dir, f"file://{tmp_path / 'out'}"))
    assert f"--output 'file://{tmp_path / 'out'}': give the local path {str(tmp_path / 'out')!r}" in error
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_file_is_refused(pets_dir, tmp_path, capsys):
    out = tmp_path / "a-file"
    out.write_bytes(b"precious")
    error = _refused(capsys, lambda: _run(pets_dir, out))
    assert f"--output {str(out)!r} is a file, not a folder" in error
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("inside", ["train-00000-of-00002.tfrecord", "lineage", ".incomplete/cache",
                                    "metadata/cache", "manifest.json", ".beam-etl-up-to-date.json"])
def test_a_cache_where_the_output_has_its_own_files_is_refused(pets_dir, tmp_path, capsys, inside):
    out = tmp_path / "out"
    cache = str(out / inside)
    error = _refused(capsys, lambda: _run(pets_dir, out, "--cache", cache))
    assert f"--cache {cache!r} is where --output {str(out)!r} keeps " in error
    assert not out.exists()


def test_a_cache_that_cannot_be_made_is_refused_before_anything_is_touched(pets_dir, tmp_path, capsys):
    """Under a file there is no folder to make: the run would keep nothing, saying only that the
    cache is read-only."""
    (tmp_path / "a-file").write_bytes(b"precious")
    cache = str(tmp_path / "a-file" / "cache")
    error = _refused(capsys, lambda: _run(pets_dir, tmp_path / "out", "--cache", cache))
    assert f"--cache {cache!r}: no such folder, and none can be made ({tmp_path / 'a-file'} is not a folder)" in error
    assert (tmp_path / "a-file").read_bytes() == b"precious" and not (tmp_path / "out").exists()


def test_a_cache_that_is_a_file_is_refused(pets_dir, tmp_path, capsys):
    cache = tmp_path / "a-file"
    cache.write_bytes(b"precious")
    error = _refused(capsys, lambda: _run(pets_dir, tmp_path / "out", "--cache", str(cache)))
    assert f"--cache {str(cache)!r} is a file, not a folder" in error
    assert cache.read_bytes() == b"precious" and not (tmp_path / "out").exists()


def test_a_cache_in_a_folder_of_its_own_inside_the_output_is_kept_across_runs(pets_dir, tmp_path):
    out = tmp_path / "out"
    cache = out / "my-cache"
    first = _run(pets_dir, out, "--cache", str(cache), "--no_statistics")
    entries = sorted(p.name for p in (cache / "outcomes").iterdir())
    second = _run(pets_dir, out, "--cache", str(cache), "--no_statistics", "--overwrite", "--num_shards", "3")
    assert second["num_written"] == first["num_written"] > 0
    assert set(entries) <= {p.name for p in (cache / "outcomes").iterdir()}
    assert verification.verify(str(out)) == {}  # (a folder of the user's: not the job's, not its manifest's)


def test_the_filesystem_root_is_refused_as_output(pets_dir, capsys):
    with pytest.raises(SystemExit) as exited:
        options.parse_args(["--oxford_pets", str(pets_dir), "--output", "/", *FLAGS])
    assert exited.value.code == 2
    assert "--output '/' is the root of the filesystem" in capsys.readouterr().err


def test_tiny_shard_size_never_makes_more_files_than_examples(pets_dir, tmp_path):
    manifest = preprocess.run(["--oxford_pets", str(pets_dir), "--output", str(tmp_path / "out"),
                               "--image_size", "16", "--shard_size_mb", "0.001", "--no_statistics"])
    for split in manifest["splits"].values():  # (shard counts come from inputs, before rejects)
        assert 1 <= len(split["files"]) <= max(1, split["num_examples"] + manifest["num_rejected"])
    assert sum(len(split["files"]) for split in manifest["splits"].values()) < 40


@pytest.mark.parametrize("flags, place, named", [
    (("--images", "{d}/images/*.jpg", "--masks", "{d}/annotations/trimaps/*.png"), ("--output", "{d}/images"),
     "--images '{d}/images/*.jpg'"),
    (("--images", "{d}/images/*", "--masks", "{d}/annotations/trimaps/*.png"), ("--output", "{d}/images/out"),
     "--images '{d}/images/*'"),
    (("--oxford_pets", "{d}"), ("--output", "{d}/annotations/trimaps"), "--oxford_pets"),
    (("--oxford_pets", "{d}"), ("--cache", "{d}/images/cache"), "--oxford_pets"),
])
def test_an_output_or_cache_in_a_folder_the_sources_list_is_refused(pets_dir, tmp_path, capsys, flags, place, named):
    """The job's files would be read as inputs by its next run (and shown as rejected inputs)."""
    data = tmp_path / "data"
    shutil.copytree(pets_dir, data)
    before = sorted((p, p.stat().st_mtime_ns) for p in data.rglob("*"))
    argv = [arg.format(d=data) for arg in flags]
    flag, value = place[0], place[1].format(d=data)
    if flag == "--cache":
        argv += ["--output", str(tmp_path / "out")]
    argv += [flag, value, "--image_size", "32"]
    with pytest.raises(SystemExit) as exited:
        preprocess.run(argv)
    error = capsys.readouterr().err
    assert exited.value.code == 2 and f"{flag} {value!r} lies in " in error and named.format(d=data) in error
    assert sorted((p, p.stat().st_mtime_ns) for p in data.rglob("*")) == before
    assert not (tmp_path / "out").exists()


def test_an_output_beside_the_oxford_layout_s_folders_is_fine(pets_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pets_dir, data)
    manifest = _run(data, data / "out")
    assert manifest["num_written"] > 0


def test_a_commit_step_retried_after_it_released_the_lease_leaves_the_next_run_s_files(earlier, pets_dir, tmp_path):
    """A runner retries the commit step of a run that committed (its worker died before saying
    so) while the next run holds the lease and stages: the retry must not clear that run's
    .incomplete/ (its staged files, or mid-swap, the earlier output kept in previous/)."""
    out = _copy(earlier, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    taker = lease.Holder(run_id="0b5e55ed", host="another-host", pid=1, process_start="", started=time.time())
    (out / INCOMPLETE_DIR).mkdir()
    (out / INCOMPLETE_DIR / "lease.json").write_text(json.dumps(taker.__dict__))
    staged = sink.stage_file(str(out), taker.run_id, "train-00000-of-00002.tfrecord", [b"the next run's"])
    before = _snapshot(out)
    commit.commit(str(out), manifest["run_id"], manifest, list(manifest["files"]))  # the retry
    assert _snapshot(out) == before and staged["bytes"] == len(b"the next run's")
    assert lease.read_holder(str(out)).run_id == taker.run_id
