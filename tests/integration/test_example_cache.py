"""Outcomes cached by content: a rerun decodes only what it has not seen, and its output is
byte for byte a fresh run's over the same final inputs."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from beam_etl import file_states
from beam_etl.beam import example_cache, outcome_store
from beam_etl.output_layout import CACHE_DIR, UP_TO_DATE
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support import input_edits
from tests.support.jobs import comparable, output_files

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def data(tmp_path):
    """12 pairs, and 4 more set aside to arrive later."""
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=16, seed=5)
    later = tmp_path / "later"
    (later / "images").mkdir(parents=True)
    (later / "masks").mkdir()
    for image in sorted((root / "images").glob("*.jpg"))[12:]:
        shutil.move(image, later / "images" / image.name)
        mask = root / "annotations" / "trimaps" / f"{image.stem}.png"
        shutil.move(mask, later / "masks" / mask.name)
    return root, later


def _run(root, out, *extra):
    return preprocess.run(["--images", str(root / "images" / "*.jpg"),
                           "--masks", str(root / "annotations" / "trimaps" / "*.png"),
                           "--output", str(out), "--image_size", "40x32", "--num_shards", "2",
                           "--augment_copies", "1", *extra])


def _assert_same_as_fresh(root, out, tmp_path, *extra):
    fresh_out = tmp_path / f"fresh{len(list(tmp_path.glob('fresh*')))}"
    fresh = _run(root, fresh_out, *extra)
    assert output_files(out) == output_files(fresh_out)
    assert comparable(json.loads((out / "manifest.json").read_text())) == comparable(fresh)


def _entries(out):
    """The cache's entries by name: where each was written."""
    return outcome_store.OutcomeStore(str(out / CACHE_DIR)).entries()


def test_a_grown_dataset_decodes_only_its_new_inputs(data, tmp_path, decodes):
    root, later = data
    out = tmp_path / "out"
    first = _run(root, out)
    assert len(decodes) == first["num_inputs"] == 12 and len(_entries(out)) == 12
    for image in (later / "images").iterdir():
        shutil.copy(image, root / "images" / image.name)
        shutil.copy(later / "masks" / image.name.replace(".jpg", ".png"),
                    root / "annotations" / "trimaps" / image.name.replace(".jpg", ".png"))
    decodes.clear()
    second = _run(root, out, "--overwrite")
    assert sorted(decodes) == sorted(p.stem for p in (later / "images").iterdir())
    assert second["num_inputs"] == 16 and len(_entries(out)) == 16
    decodes.clear()
    _assert_same_as_fresh(root, out, tmp_path)
    assert len(decodes) == 16  # the fresh run, in its own folder, has no cache


def test_nothing_new_decodes_nothing_and_a_flag_that_shapes_no_example_changes_nothing(data, tmp_path, decodes):
    root, _ = data
    out = tmp_path / "out"
    _run(root, out)
    decodes.clear()
    _run(root, out, "--overwrite", "--num_shards", "3")
    assert decodes == []
    _assert_same_as_fresh(root, out, tmp_path, "--num_shards", "3")


@pytest.mark.parametrize("flag", [["--image_size", "32x32"], ["--image_format", "png"], ["--resize", "crop"]])
def test_a_flag_that_shapes_the_examples_decodes_everything_again(data, tmp_path, decodes, flag):
    root, _ = data
    out = tmp_path / "out"
    _run(root, out)
    decodes.clear()
    _run(root, out, "--overwrite", *flag)
    assert len(decodes) == 12
    _assert_same_as_fresh(root, out, tmp_path, *flag)


def test_a_changed_mask_and_a_removed_input(data, tmp_path, decodes):
    root, _ = data
    out = tmp_path / "out"
    _run(root, out)
    masks = sorted((root / "annotations" / "trimaps").glob("*.png"))
    shutil.copy(masks[1], masks[0])  # a labeller's fix: another mask, the same size here
    removed = sorted((root / "images").glob("*.jpg"))[-1]
    removed.unlink()
    decodes.clear()
    manifest = _run(root, out, "--overwrite")
    assert decodes == [masks[0].stem]
    assert manifest["num_inputs"] == 12  # the removed image's mask is an orphan now
    _assert_same_as_fresh(root, out, tmp_path)


def test_a_damaged_entry_is_computed_again_never_copied(data, tmp_path, decodes):
    root, _ = data
    out = tmp_path / "out"
    _run(root, out)
    entries = sorted(((name, location) for name, (location,) in _entries(out).items()),
                     key=lambda entry: (entry[1].segment, entry[1].offset))
    (last, cut), (first, flipped) = entries[-1], entries[0]
    os.truncate(cut.segment, cut.offset + cut.length - 7)  # cut short, as a write the machine died in
    with open(flipped.segment, "r+b") as segment:  # same size, one byte other
        segment.seek(flipped.offset + flipped.length // 2)
        byte = segment.read(1)[0]
        segment.seek(-1, os.SEEK_CUR)
        segment.write(bytes([byte ^ 0xFF]))
    decodes.clear()
    _run(root, out, "--overwrite")
    assert len(decodes) == 2
    cache = outcome_store.OutcomeStore(str(out / CACHE_DIR))
    for name in (last, first):
        assert cache.read(name)[0] is not None and len(cache.entries()[name]) == 2  # written anew
    cache.close()
    _assert_same_as_fresh(root, out, tmp_path)


def test_no_cache_and_a_cache_elsewhere(data, tmp_path, decodes):
    root, _ = data
    shared = tmp_path / "shared cache[1]"
    _run(root, tmp_path / "a", "--cache", str(shared))
    _run(root, tmp_path / "b", "--cache", str(shared))
    assert len(decodes) == 12  # the second output found every outcome in the shared cache
    assert not (tmp_path / "a" / CACHE_DIR).exists() and len(outcome_store.OutcomeStore(str(shared)).entries()) == 12
    decodes.clear()
    _run(root, tmp_path / "c", "--no_cache")
    assert len(decodes) == 12 and not (tmp_path / "c" / CACHE_DIR).exists()
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b") == output_files(tmp_path / "c")


@pytest.mark.parametrize("flag", [["--seed", "7"], ["--augment_copies", "2"], ["--no_statistics"]])
def test_a_flag_that_shapes_training_examples_only_decodes_only_those(data, tmp_path, decodes, flag):
    """Augmentation (copies, seed) and the statistics' shares are the training split's alone:
    the other splits' outcomes, and records, stay."""
    root, _ = data
    out = tmp_path / "out"
    first = _run(root, out)
    index = {json.loads(line)["key"]: json.loads(line)["split"] for name in first["lineage"]["files"]
             for line in (out / name).read_text().splitlines()}
    assert set(index.values()) > {"train"}  # other splits too, or the test shows nothing
    decodes.clear()
    second = _run(root, out, "--overwrite", *flag)
    assert sorted(decodes) == sorted(key for key, split in index.items() if split == "train")
    changed = 0 if flag == ["--no_statistics"] else len(decodes)  # (statistics: the same records)
    assert second["changes"]["changed"] == changed and second["changes"]["unchanged"] == len(index) - changed
    _assert_same_as_fresh(root, out, tmp_path, *flag)


def test_a_rerun_reads_no_input_it_knows_by_its_state(data, tmp_path, decodes, reads, monkeypatch):
    """A local file whose size, times, inode and device are those its digest was recorded with
    is not read again; one rewritten with its size and modification time put back is."""
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 0.0)  # (written moments ago, and left alone)
    root, _ = data
    out = tmp_path / "out"
    first = _run(root, out)
    assert len(reads) == 2 * first["num_inputs"] == sum(map(len, _digests(out).values()))
    reads.clear()
    decodes.clear()
    _run(root, out, "--overwrite", "--num_shards", "3")  # the job runs (another flag), on its cache
    assert reads == [] and decodes == []
    changed = input_edits.swap_mask_labels(root)
    _run(root, out, "--overwrite", "--num_shards", "3")
    assert sorted(os.path.basename(uri) for uri in reads) == [f"{changed.stem}.jpg", changed.name]
    assert decodes == [changed.stem]
    _assert_same_as_fresh(root, out, tmp_path, "--num_shards", "3")


def test_an_input_that_has_not_settled_gets_no_digest(data, tmp_path, reads, monkeypatch):
    """A file whose times are younger than the settle window when read may still be written
    in the same clock tick: it is read again next time."""
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 3600.0)
    root, _ = data
    out = tmp_path / "out"
    first = _run(root, out)
    assert _digests(out) == {}
    reads.clear()
    _run(root, out, "--overwrite", "--num_shards", "3")
    assert len(reads) == 2 * first["num_inputs"]


def test_worker_processes_record_digests_too(data, tmp_path):
    root, _ = data
    out = tmp_path / "out"
    time.sleep(file_states.SETTLE_SECONDS)  # (the workers' own window: they are other processes)
    first = _run(root, out, "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")
    digests = _digests(out)
    assert len(digests) == 2 * first["num_inputs"]
    for path, states in digests.items():
        ((state, sha256),) = states.items()
        assert state == file_states.file_state(os.stat(path))
        assert sha256 == example_cache.digest(pathlib.Path(path).read_bytes())


def _digests(out):
    return outcome_store.OutcomeStore(str(out / CACHE_DIR)).digests()


def _stopped(process: subprocess.Popen) -> bool:
    with open(f"/proc/{process.pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize("edited, fails", [("beam_etl/image/chain.py", True), ("beam_etl/beam/sink.py", False),
                                           (None, False)])
def test_code_changed_on_disk_while_a_run_goes_on_is_never_cached_or_recorded_as_the_new_code(
        data, tmp_path, edited, fails):
    """The job's modules are imported as the command starts; a file changed after that (a ``git
    pull``, an upgrade) must not put the old code's outcomes in the cache under the new code's
    version, where the next run would take them, nor leave a state saying the new code made the
    output. The run, a copy of the code, stops after taking its lease; the test edits a file."""
    root, _ = data
    code = tmp_path / "code"
    for package in ("beam_etl", "pipelines", "beam_dask"):
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    settling = code / "beam_etl" / "file_states.py"  # (inputs written moments ago, and left alone)
    settling.write_text(settling.read_text().replace("\nSETTLE_SECONDS = 2.0", "\nSETTLE_SECONDS = 0.0"))
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = dict(os.environ, BEAM_ETL_CRASH_AT="after_lease:SIGSTOP", TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(  # (the copy's folder first on the path: its modules are imported)
        [sys.executable, "-m", "pipelines.preprocess", "--images", str(root / "images" / "*.jpg"),
         "--masks", str(root / "annotations" / "trimaps" / "*.png"), "--output", str(out), "--image_size", "40x32",
         "--cache", str(cache), "--no_statistics"],
        cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(process) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stopped(process), process.communicate()
        if edited is not None:
            with open(code / edited, "a", encoding="utf-8") as source:
                source.write("\nCHANGED_WHILE_THE_RUN_WENT_ON = True\n")
        process.send_signal(signal.SIGCONT)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    if fails:
        assert process.returncode == 1, stderr[-3000:]
        assert ("the per-image code here is not the code the run started with (beam_etl.image.chain): on this "
                "machine, it changed on disk since the run started") in stderr
        os.remove(stderr.split("the traceback is in ")[1].split(";")[0])
        assert not outcome_store.OutcomeStore(str(cache)).entries()  # nothing cached under either version
        assert not out.exists()
    else:
        assert process.returncode == 0, stderr[-3000:]
        # which code made it is not known: no state, and the next run runs
        assert (out / UP_TO_DATE).exists() == (edited is None)


@pytest.mark.parametrize("edit, computed", [
    ("helper", True),  # a module the chain reaches only through a relative import of another
    ("package", True),  # a constant in the __init__ of the chain's package
    ("sink", False),  # code that writes shards, not outcomes
])
def test_a_change_in_any_code_the_chain_imports_finds_no_cached_outcome(data, tmp_path, edit, computed):
    """The chain's version is every module of the job it imports, however it imports them: a
    rerun after an edit to one takes no outcome of the old code from the cache."""
    root, _ = data
    code = tmp_path / "code"
    for package in ("beam_etl", "pipelines", "beam_dask"):
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    resizing = code / "beam_etl" / "image" / "resizing.py"
    resizing.write_text(resizing.read_text() + "\nfrom . import scale_helper  # noqa: E402\n")
    (code / "beam_etl" / "image" / "scale_helper.py").write_text("FACTOR = 1\n")
    edited = {"helper": code / "beam_etl" / "image" / "scale_helper.py",
              "package": code / "beam_etl" / "image" / "__init__.py",
              "sink": code / "beam_etl" / "beam" / "sink.py"}[edit]
    out, cache = tmp_path / "out", tmp_path / "cache"

    def run():
        finished = subprocess.run(
            [sys.executable, "-m", "pipelines.preprocess", "--images", str(root / "images" / "*.jpg"),
             "--masks", str(root / "annotations" / "trimaps" / "*.png"), "--output", str(out),
             "--image_size", "40x32", "--cache", str(cache), "--no_statistics", "--overwrite"],
            cwd=code, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr[-3000:]
        return len(outcome_store.OutcomeStore(str(cache)).entries())

    first = run()
    assert first == 12
    edited.write_text(edited.read_text() + "\nEDITED = 2\n")
    assert run() == (2 * first if computed else first)
