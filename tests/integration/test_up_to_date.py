"""The same command again over unchanged inputs leaves the output as it is, before Beam loads;
any change it could miss runs the job, which ends as a fresh run over the final inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from beam_etl import file_states
from beam_etl.beam import up_to_date
from beam_etl.loader import verification
from beam_etl.output_layout import INCOMPLETE_DIR, LEASE, UP_TO_DATE, UP_TO_DATE_FILES
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support import input_edits
from tests.support.jobs import comparable, output_files

pytestmark = pytest.mark.slow


@pytest.fixture
def settled(monkeypatch):
    """Inputs count as settled at once (the tests write them moments before the run)."""
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 0.0)


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=14, seed=3)
    return root


def _argv(root, out, *extra):
    return ["--images", str(root / "images" / "*.jpg"), "--masks", str(root / "annotations" / "trimaps" / "*.png"),
            "--output", str(out), "--image_size", "40x32", "--num_shards", "2", *extra]


def _run(root, out, *extra):
    return preprocess.run(_argv(root, out, *extra))


def _stats(out):
    """Every file and folder of the output with its inode and times: what a run would change."""
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_ctime_ns)
            for p in sorted(out.rglob("*"))}


def _fresh_equal(root, out, tmp_path, *extra):
    fresh_out = tmp_path / f"fresh{len(list(tmp_path.glob('fresh*')))}"
    fresh = preprocess.run(_argv(root, fresh_out, *extra))  # a new folder: its cache is empty
    assert output_files(out) == output_files(fresh_out)
    assert comparable(json.loads((out / "manifest.json").read_text())) == comparable(fresh)


def test_the_same_command_again_leaves_the_output_as_it_is(data, tmp_path, settled, decodes, capsys):
    out = tmp_path / "out"
    first = _run(data, out)
    assert (out / UP_TO_DATE).is_file() and len(decodes) == 14
    before = _stats(out)
    decodes.clear()
    capsys.readouterr()
    again = _run(data, out, "--overwrite")
    assert again == first and decodes == []
    assert _stats(out) == before  # not a file rewritten, not even the state
    said = capsys.readouterr().out
    assert f"{out} is up to date" in said and first["run_id"] in said and "14 inputs -> 14 written" in said
    # --no_cache runs the job whatever the state says; so does a command without --overwrite (refused).
    third = _run(data, out, "--overwrite", "--no_cache")
    assert third["run_id"] != first["run_id"] and len(decodes) == 14
    with pytest.raises(SystemExit) as refused:
        _run(data, out)
    assert refused.value.code == 2


def test_a_run_on_worker_processes_is_found_up_to_date_too(data, tmp_path, settled):
    """The warm parent of the workers and the run set BEAM_ETL_ variables of their own: the
    state records the environment the command started with."""
    out = tmp_path / "out"
    workers = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    first = _run(data, out, *workers)
    assert _run(data, out, "--overwrite", *workers) == first


def _add_pair(root):
    image = sorted((root / "images").glob("*.jpg"))[0]
    shutil.copy(image, root / "images" / "zz_new.jpg")
    shutil.copy(root / "annotations" / "trimaps" / f"{image.stem}.png", root / "annotations" / "trimaps" / "zz_new.png")


def _remove_pair(root):
    image = sorted((root / "images").glob("*.jpg"))[-1]
    image.unlink()
    (root / "annotations" / "trimaps" / f"{image.stem}.png").unlink()


def _rename_image(root):
    image = sorted((root / "images").glob("*.jpg"))[-1]
    image.rename(image.with_name("renamed.jpg"))


CHANGES = {
    "a mask rewritten with its size and mtime kept": (input_edits.swap_mask_labels, 1),
    "a pair added": (_add_pair, 1),
    "a pair removed": (_remove_pair, 0),
    "an image renamed (now two inputs, each missing a file)": (_rename_image, 0),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_input_runs_the_job_and_ends_as_a_fresh_run(change, data, tmp_path, settled, decodes):
    out = tmp_path / "out"
    first = _run(data, out)
    make_change, new_decodes = CHANGES[change]
    make_change(data)
    decodes.clear()
    again = _run(data, out, "--overwrite")
    assert again["run_id"] != first["run_id"] and len(decodes) == new_decodes  # the rest from the cache
    _fresh_equal(data, out, tmp_path)
    assert verification.verify(str(out)) == {}


def test_an_output_file_rewritten_in_place_is_made_again(data, tmp_path, settled):
    out = tmp_path / "out"
    first = _run(data, out)
    shard = sorted(out.glob("train-*.tfrecord"))[0]
    tampered = bytearray(shard.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    input_edits.rewrite_in_place(shard, bytes(tampered))
    assert shard.name in verification.verify(str(out))
    again = _run(data, out, "--overwrite")
    assert again["run_id"] != first["run_id"] and verification.verify(str(out)) == {}


def test_a_flag_the_environment_the_folder_or_a_dead_run_s_lease_runs_the_job(data, tmp_path, settled, monkeypatch):
    out = tmp_path / "out"
    run_ids = [_run(data, out)["run_id"]]
    run_ids.append(_run(data, out, "--overwrite", "--seed", "1")["run_id"])  # another command
    monkeypatch.setenv("BEAM_ETL_SOMETHING", "1")  # the job's environment
    run_ids.append(_run(data, out, "--overwrite", "--seed", "1")["run_id"])
    assert _run(data, out, "--overwrite", "--seed", "1")["run_id"] == run_ids[-1]  # now up to date
    monkeypatch.chdir(tmp_path)  # the same absolute paths from another folder
    run_ids.append(_run(data, out, "--overwrite", "--seed", "1")["run_id"])
    # A lease left in the output (a run that died, or one running now) is the job's to judge.
    (out / INCOMPLETE_DIR).mkdir()
    (out / LEASE).write_text(json.dumps({"run_id": "0" * 32, "host": "elsewhere", "pid": 1, "process_start": "",
                                                   "started": time.time()}))
    with pytest.raises(SystemExit):
        _run(data, out, "--overwrite", "--seed", "1")  # held by a live run elsewhere: refused, not "up to date"
    assert len(set(run_ids)) == len(run_ids) == 4


def test_a_rerun_walks_the_source_folders_once(data, tmp_path, settled, monkeypatch):
    """The check's snapshot of the inputs, taken before the run read a byte, is the one the run
    records; a change after it is seen by the next check."""
    out = tmp_path / "out"
    _run(data, out)
    walked = []
    real = up_to_date.tree_digest
    monkeypatch.setattr(up_to_date, "tree_digest", lambda root, **k: walked.append(root) or real(root, **k))
    image = sorted((data / "images").glob("*.jpg"))[0]
    original = image.read_bytes()
    input_edits.rewrite_in_place(image, original[:-3] + bytes([original[-3] ^ 0xFF]) + original[-2:])
    again = _run(data, out, "--overwrite")  # other bytes, with the old size and time: the job runs
    roots = {str(data / "images"), str(data / "annotations" / "trimaps")}
    assert sorted(w for w in walked if w in roots) == sorted(roots)
    assert _run(data, out, "--overwrite") == again  # its state, from the check's snapshot, holds
    input_edits.rewrite_in_place(image, original)
    assert _run(data, out, "--overwrite")["run_id"] != again["run_id"]
    # Only the snapshot of the check of the same run counts: none is kept for a later run.
    walked.clear()
    shutil.rmtree(out)
    _run(data, out)
    assert sorted(w for w in walked if w in roots) == sorted(roots)


def test_inputs_touched_or_written_again_with_the_same_bytes_leave_the_output_up_to_date(
        data, tmp_path, settled, decodes, monkeypatch):
    """A file whose stat changed is hashed: the bytes its run recorded leave the output as it is
    (and the state is taken anew); a file the job never hashed, or other bytes, run the job."""
    (data / "images" / "notes.txt").write_text("not an input, under a source folder")
    out = tmp_path / "out"
    first = _run(data, out)
    image = sorted((data / "images").glob("*.jpg"))[0]
    mask = sorted((data / "annotations" / "trimaps").glob("*.png"))[-1]
    decodes.clear()
    os.utime(image)  # touched
    assert _run(data, out, "--overwrite") == first and decodes == []
    state = (out / UP_TO_DATE).read_bytes()
    os.utime(image)  # again: the digest the last check took is in the state now
    (mask.parent / "tmp.part").write_bytes(mask.read_bytes())
    os.replace(mask.parent / "tmp.part", mask)  # written again, another inode: an editor's save
    assert _run(data, out, "--overwrite") == first and decodes == []
    assert (out / UP_TO_DATE).read_bytes() != state  # taken anew, with the new states
    shards = output_files(out)
    # Changed moments ago: still found the same, but not vouched for by its state.
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 3600.0)
    state = (out / UP_TO_DATE).read_bytes()
    os.utime(mask)
    assert _run(data, out, "--overwrite") == first and (out / UP_TO_DATE).read_bytes() == state
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 0.0)
    os.utime(data / "images" / "notes.txt")  # no digest of it: the job runs (on its cache)
    second = _run(data, out, "--overwrite")
    assert second["run_id"] != first["run_id"] and decodes == [] and output_files(out) == shards
    assert _run(data, out, "--overwrite") == second
    (out / UP_TO_DATE_FILES).write_text("{}")  # damaged: not believed
    os.utime(image)
    assert _run(data, out, "--overwrite")["run_id"] != second["run_id"]


def test_an_input_changed_while_the_run_went_on_and_put_back_after_it_runs_the_job(
        data, tmp_path, settled, monkeypatch):
    """The snapshot is taken before the run reads a byte; what the run read is what its lineage
    says. A file rewritten after the snapshot, and its old bytes put back once the run ended,
    holds other bytes than its output was made from."""
    out = tmp_path / "out"
    first = _run(data, out)
    image, other = sorted((data / "images").glob("*.jpg"))[:2]
    original = image.read_bytes()
    real = up_to_date.Snapshot.__init__

    def then_rewrite(self, *args, **kwargs):
        real(self, *args, **kwargs)
        image.write_bytes(other.read_bytes())  # after the snapshot, before the job reads it

    monkeypatch.setattr(up_to_date.Snapshot, "__init__", then_rewrite)
    os.utime(data / "images" / other.name)
    input_edits.rewrite_in_place(other, other.read_bytes()[:-3] + b"\x00\x00\x00")  # the job runs
    second = _run(data, out, "--overwrite")
    monkeypatch.setattr(up_to_date.Snapshot, "__init__", real)
    assert second["run_id"] != first["run_id"]
    image.write_bytes(original)
    third = _run(data, out, "--overwrite")
    assert third["run_id"] != second["run_id"]
    _fresh_equal(data, out, tmp_path)


@pytest.mark.parametrize("swap", ["a link retargeted", "a folder swapped"])
def test_what_a_run_read_behind_a_link_or_folder_changed_meanwhile_and_set_back_runs_the_job(
        swap, data, tmp_path, settled, monkeypatch):
    """The run reads other bytes than the snapshot saw (a link retargeted, a folder swapped for
    another after the snapshot), and the sources are set back once it ended: the files' own
    states are the snapshot's, and the output was not made from them."""
    images = data / "images"
    kept, other = tmp_path / "kept", tmp_path / "other"
    for folder in (kept, other):
        folder.mkdir()
    names = sorted(path.name for path in images.glob("*.jpg"))
    first_image = (images / names[0]).read_bytes()
    for name in names:  # images/sub/<name>, or images/sub/<name> -> kept/<name>
        (kept / name).write_bytes((images / name).read_bytes())
        (other / name).write_bytes(first_image)  # other bytes behind every name
        (images / name).unlink()
    (images / "sub").mkdir()
    for name in names:
        if swap == "a link retargeted":
            (images / "sub" / name).symlink_to(kept / name)
        else:
            shutil.copy2(kept / name, images / "sub" / name)
    argv = ["--images", str(images / "*" / "*.jpg"), "--masks", str(data / "annotations" / "trimaps" / "*.png"),
            "--output", str(tmp_path / "out"), "--image_size", "40x32", "--num_shards", "2"]
    first = preprocess.run(argv)
    target = images / "sub" / names[-1]
    real = up_to_date.Snapshot.__init__

    def then_swap(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if swap == "a link retargeted":
            target.unlink()
            target.symlink_to(other / names[-1])
        else:
            (images / "sub").rename(images / "sub.away")
            shutil.copytree(other, images / "sub")

    monkeypatch.setattr(up_to_date.Snapshot, "__init__", then_swap)
    os.utime(data / "annotations" / "trimaps" / sorted(p.name for p in (data / "annotations" / "trimaps").iterdir())[0])
    second = preprocess.run(argv + ["--overwrite", "--seed", "0"])  # (another command: the job runs)
    monkeypatch.setattr(up_to_date.Snapshot, "__init__", real)
    assert second["run_id"] != first["run_id"]
    if swap == "a link retargeted":
        target.unlink()
        target.symlink_to(kept / names[-1])
    else:
        shutil.rmtree(images / "sub")
        (images / "sub.away").rename(images / "sub")
    third = preprocess.run(argv + ["--overwrite", "--seed", "0"])
    assert third["run_id"] != second["run_id"]


def test_a_broken_link_that_breaks_otherwise_or_becomes_a_fifo_runs_the_job(data, tmp_path, settled):
    """A link whose target is missing, then a loop (another error: another rejection); a link
    retargeted to a FIFO is not opened by the check (it would wait for a writer)."""
    link = data / "images" / "zed.jpg"
    target = tmp_path / "elsewhere" / "zed.jpg"
    target.parent.mkdir()
    link.symlink_to(target)
    out = tmp_path / "out"
    first = _run(data, out)
    assert _run(data, out, "--overwrite") == first
    target.symlink_to(link)  # a loop: ELOOP, not ENOENT
    second = _run(data, out, "--overwrite")
    assert second["run_id"] != first["run_id"]
    _fresh_equal(data, out, tmp_path)
    target.unlink()
    shutil.copy(sorted((data / "images").glob("*.jpg"))[0], target)
    _run(data, out, "--overwrite")
    third = _run(data, out, "--overwrite")
    target.unlink()
    os.mkfifo(target)
    checked = []
    thread = threading.Thread(target=lambda: checked.append(up_to_date.check(_argv(data, out, "--overwrite"))),
                              daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and checked == [None]  # not up to date: the job runs, and refuses the FIFO
    assert _run(data, out, "--overwrite")["run_id"] != third["run_id"]


def test_inputs_changed_moments_before_the_run_leave_no_state(data, tmp_path, monkeypatch, decodes):
    """A file rewritten twice in one tick of the file system's clock keeps its times: a run over
    inputs that changed within SETTLE_SECONDS does not vouch for them, and the next runs the job."""
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 3600.0)
    out = tmp_path / "out"
    first = _run(data, out)
    assert not (out / UP_TO_DATE).exists()
    decodes.clear()
    again = _run(data, out, "--overwrite")
    assert again["run_id"] != first["run_id"] and decodes == []  # run, from the cache


def test_a_damaged_state_is_not_believed(data, tmp_path, settled):
    out = tmp_path / "out"
    first = _run(data, out)
    state = json.loads((out / UP_TO_DATE).read_text())
    state["inputs"] = "0" * 64  # any edit breaks the checksum; so does a partial file
    (out / UP_TO_DATE).write_text(json.dumps(state))
    assert up_to_date.read_state(str(out)) is None
    assert _run(data, out, "--overwrite")["run_id"] != first["run_id"]
    (out / UP_TO_DATE).write_text((out / UP_TO_DATE).read_text()[:40])
    assert up_to_date.read_state(str(out)) is None


def test_an_input_that_is_a_link_is_followed_and_a_linked_folder_leaves_no_state(data, tmp_path, settled):
    """What a link points to can change without a trace in the source folder: the snapshot
    takes in a linked file, and a linked folder (a tree elsewhere) leaves no state."""
    elsewhere = tmp_path / "elsewhere.jpg"
    image = sorted((data / "images").glob("*.jpg"))[0]
    shutil.move(image, elsewhere)
    image.symlink_to(elsewhere)
    out = tmp_path / "out"
    first = _run(data, out)
    assert _run(data, out, "--overwrite")["run_id"] == first["run_id"]  # up to date
    input_edits.rewrite_in_place(elsewhere, bytes(reversed(elsewhere.read_bytes())))  # no longer a JPEG
    again = _run(data, out, "--overwrite")
    assert again["run_id"] != first["run_id"] and again["num_rejected"] == first["num_rejected"] + 1
    linked = tmp_path / "linked"
    (data / "annotations" / "trimaps").rename(linked)
    (data / "annotations" / "trimaps").symlink_to(linked, target_is_directory=True)
    folder_out = tmp_path / "out2"  # --oxford_pets: its masks' folder, under its annotations, is a link
    preprocess.run(["--oxford_pets", str(data), "--output", str(folder_out), "--image_size", "40x32"])
    assert (folder_out / "manifest.json").is_file() and not (folder_out / UP_TO_DATE).exists()
    _run(data, out, "--overwrite")  # --masks: a glob's own folder may be a link (it is followed)
    assert (out / UP_TO_DATE).is_file()
    (data / "images").rename(tmp_path / "linked_images")  # (as --oxford_pets' images folder itself)
    (data / "images").symlink_to(tmp_path / "linked_images", target_is_directory=True)
    (data / "annotations" / "trimaps").unlink()
    linked.rename(data / "annotations" / "trimaps")
    preprocess.run(["--oxford_pets", str(data), "--output", str(folder_out), "--image_size", "40x32", "--overwrite"])
    assert (folder_out / UP_TO_DATE).is_file()


def test_the_code_digest_follows_the_job_s_sources(tmp_path, monkeypatch):
    package = tmp_path / "somepkg"
    package.mkdir()
    (package / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(up_to_date, "_PACKAGES", ("somepkg",))
    first = up_to_date.code_digest()
    assert up_to_date.code_digest() == first
    (package / "__init__.py").write_text("X = 2\n")
    assert up_to_date.code_digest() != first
    assert sys.modules.get("somepkg") is None  # read, not imported


def test_the_code_digest_follows_where_modules_are_found(tmp_path, monkeypatch):
    """A library found through PYTHONPATH instead of the environment's own changes what the chain
    computes: a new folder on the path, or a module put into one, is another code."""
    first = up_to_date.code_digest()
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    monkeypatch.syspath_prepend(str(shadow))
    on_path = up_to_date.code_digest()
    assert on_path != first
    (shadow / "notes.txt").write_text("not a module")
    (shadow / "data").mkdir()
    assert up_to_date.code_digest() == on_path
    (shadow / "simplejpeg").mkdir()
    (shadow / "simplejpeg" / "__init__.py").write_text("__version__ = '9'\n")
    assert up_to_date.code_digest() not in (first, on_path)


@pytest.mark.parametrize("pattern, root", [
    ("/data/images/*.jpg", "/data/images"),
    ("/data/*/x.jpg", "/data"),
    ("/data/im[ab]/**/*.png", "/data"),
    ("file:///data/a.png", "/data"),
    ("gs://bucket/images/*.jpg", None),
    ("/data/link/../other/*.jpg", None),  # after a link, ".." is not where os.path.abspath says
    ("/runs/run [[]1] [*]/images/*.jpg", "/runs/run [1] */images"),  # (escaped characters are no wildcards)
    ("/runs/a[[]1]/x.jpg", "/runs/a[1]"),
])
def test_the_folder_a_glob_lies_under(pattern, root):
    assert up_to_date.root_of(pattern) == root


def test_a_command_that_asks_for_more_than_the_output_is_never_answered_from_the_state(data, tmp_path, settled):
    out, graphs = tmp_path / "out", tmp_path / "graphs"
    first = _run(data, out)
    argv = _argv(data, out, "--overwrite")
    assert up_to_date.check(argv) == first
    missing = str(tmp_path / "no such folder" / "graph.dot")
    for extra in (["--render_graph", missing], [f"--render_graph={missing}"], ["--help"], ["-h"]):
        assert up_to_date.check([*argv, *extra]) is None
    with pytest.raises(SystemExit) as refused:  # its flags are checked: the folder is not there
        _run(data, out, "--overwrite", "--render_graph", missing)
    assert refused.value.code == 2
    graphs.mkdir()
    again = _run(data, out, "--overwrite", "--render_graph", str(graphs / "graph.dot"))
    assert again["run_id"] != first["run_id"] and (graphs / "graph.dot").read_text().startswith("digraph")


def test_an_output_inside_its_oxford_root_is_found_up_to_date(data, settled, decodes):
    """``--oxford_pets DATA --output DATA/out`` (allowed: the layout reads only its images and
    annotations): the output's own files are no inputs of the next run's check."""
    out = data / "out"
    argv = ["--oxford_pets", str(data), "--output", str(out), "--image_size", "32"]
    first = preprocess.run(argv)
    decodes.clear()
    assert preprocess.run([*argv, "--overwrite"]) == first and decodes == []
    listed = data / "annotations" / "trainval.txt"
    listed.write_bytes(listed.read_bytes() + b"# a list is an input\n")
    assert preprocess.run([*argv, "--overwrite"])["run_id"] != first["run_id"]


def test_the_state_s_partial_files_a_killed_writer_left_are_removed_by_the_next_writer(tmp_path):
    """A process killed while it wrote the state leaves ``<state>.<pid>.partial``: the next run
    that writes the state removes those of processes no longer running, once older than a writer
    takes (a writer of another pid namespace has a pid this host may not know), and no other file."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [f"{UP_TO_DATE}{files}.{pid}.partial" for pid in (gone.pid, alive.pid, 2 ** 40)
                 for files in ("", ".files")]
        for name in names:
            (tmp_path / name).write_bytes(b"{")
            os.utime(tmp_path / name, (time.time() - 120, time.time() - 120))
        (tmp_path / f"{UP_TO_DATE}.{gone.pid + 100000}.partial").write_bytes(b"{")  # (just written)
        (tmp_path / "notes.partial").write_bytes(b"mine")
        os.utime(tmp_path / "notes.partial", (time.time() - 120, time.time() - 120))
        up_to_date._write_state(str(tmp_path), {"format": up_to_date.FORMAT}, {})  # pylint: disable=protected-access
        assert sorted(path.name for path in tmp_path.iterdir()) == sorted([
            UP_TO_DATE, f"{UP_TO_DATE}.files", f"{UP_TO_DATE}.{alive.pid}.partial",
            f"{UP_TO_DATE}.files.{alive.pid}.partial", f"{UP_TO_DATE}.{gone.pid + 100000}.partial",
            "notes.partial"])
    finally:
        alive.kill()
        alive.wait()
