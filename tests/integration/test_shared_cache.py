"""A ``--cache`` shared by users: the files of it another user made, which this one cannot
read, are passed over (their outcomes computed again, the run's output the same); a cache this
user may only read is read, and nothing is written to it; a prune leaves what it cannot read.

The other user's files are files whose mode lets no one read them, and the commands run as a
user file modes apply to (:mod:`tests.support.file_modes`)."""

from __future__ import annotations

import os
import shutil

import pytest

from beam_etl.beam import outcome_store
from beam_etl.output_layout import CACHE_DIR
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support.file_modes import run_module
from tests.support.jobs import output_files

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=10, seed=4)
    return root


def _flags(root, out, *extra) -> list[str]:
    return ["--images", str(root / "images" / "*.jpg"), "--masks", str(root / "annotations" / "trimaps" / "*.png"),
            "--output", str(out), "--image_size", "40x32", "--num_shards", "2", *extra]


def _job(root, out, *extra):
    """The job as another user (a command file modes apply to)."""
    return run_module("pipelines.preprocess", *_flags(root, out, *extra))


def _writer_files(cache) -> list[str]:
    return sorted(name for name in os.listdir(cache / outcome_store.SEGMENTS) if outcome_store.is_writer_file(name))


def _locations(cache) -> int:
    return sum(len(places) for places in outcome_store.OutcomeStore(str(cache)).entries().values())


def _theirs(data, tmp_path):
    """A cache with one user's outcomes of ``data`` (and that user's output), made unreadable to others."""
    cache = tmp_path / "shared"
    preprocess.run(_flags(data, tmp_path / "theirs", "--cache", str(cache)))
    theirs = _writer_files(cache)
    assert {name[32:] for name in theirs} >= {outcome_store.SEGMENT, outcome_store.INDEX}
    for name in theirs:
        (cache / outcome_store.SEGMENTS / name).chmod(0)
    return cache, theirs


def test_the_files_of_a_cache_this_user_cannot_read_are_passed_over(data, tmp_path):
    cache, theirs = _theirs(data, tmp_path)
    before = _locations(cache)
    done = _job(data, tmp_path / "ours", "--cache", str(cache))
    assert done.returncode == 0, done.stderr
    assert output_files(tmp_path / "ours") == output_files(tmp_path / "theirs")
    assert f"{len(theirs)} files of the cache" in done.stderr and "cannot be read" in done.stderr, done.stderr
    # Its outcomes are written beside the others' (every one computed again), and its next run
    # finds them: it writes none.
    ours = sorted(set(_writer_files(cache)) - set(theirs))
    assert ours and _locations(cache) == 2 * before
    again = _job(data, tmp_path / "again", "--cache", str(cache))
    assert again.returncode == 0, again.stderr
    assert _locations(cache) == 2 * before
    assert output_files(tmp_path / "again") == output_files(tmp_path / "theirs")


@pytest.mark.parametrize("unwritable", ["outcomes", "cache", "parent", "the output's own"])
def test_a_cache_this_user_may_only_read_is_read_and_left_as_it_is(data, tmp_path, unwritable):
    """A published cache, or one on a read-only mount: the run uses what it holds, writes
    nothing to it, says so, and writes the output a run without a cache writes. A --cache
    folder that is not there, in one this user may not write to, is no cache: refused."""
    cache, out = tmp_path / "shared" / "cache", tmp_path / "out"
    flags = ["--cache", str(cache)]
    if unwritable == "the output's own":
        cache, flags = out / CACHE_DIR, []
    if unwritable in ("outcomes", "the output's own"):  # holding the outcomes of half the inputs
        half = tmp_path / "half"
        shutil.copytree(data, half)
        for image in sorted((half / "images").glob("*.jpg"))[::2]:
            image.unlink()
        preprocess.run(_flags(half, tmp_path / "earlier", "--cache", str(cache)))
        assert _locations(cache) > 0
    else:
        (cache / outcome_store.SEGMENTS).mkdir(parents=True)
        (cache / outcome_store.SEGMENTS).rmdir()
    if unwritable == "parent":
        cache.rmdir()
    folder = {"outcomes": cache / outcome_store.SEGMENTS, "cache": cache, "parent": cache.parent,
              "the output's own": cache / outcome_store.SEGMENTS}[unwritable]
    before = sorted(folder.rglob("*"))
    folder.chmod(0o555)
    done = _job(data, out, *flags)
    if unwritable == "parent":
        assert done.returncode == 2 and f"--cache {str(cache)!r}: no such folder, and none can be made" in done.stderr
        assert sorted(folder.rglob("*")) == before and not out.exists()
        return
    assert done.returncode == 0, done.stderr
    assert f"the cache {cache} is read-only to this user" in done.stderr, done.stderr
    assert sorted(folder.rglob("*")) == before
    assert _job(data, tmp_path / "fresh", "--no_cache").returncode == 0
    assert output_files(out) == output_files(tmp_path / "fresh")


def test_a_prune_leaves_the_files_it_cannot_read_and_is_refused_where_it_cannot_write(data, tmp_path):
    cache, theirs = _theirs(data, tmp_path)
    assert _job(data, tmp_path / "ours", "--cache", str(cache)).returncode == 0
    ours = sorted(set(_writer_files(cache)) - set(theirs))
    pruned = run_module("beam_etl.beam.prune_cache", str(tmp_path / "ours"))
    assert pruned.returncode == 0, pruned.stderr
    assert f"left {len(theirs)} files it cannot read or delete" in pruned.stdout, pruned.stdout
    after = _writer_files(cache)
    assert set(theirs) <= set(after) and not set(ours) & set(after)  # theirs left; ours written anew
    kept = _locations(cache)
    assert _job(data, tmp_path / "again", "--cache", str(cache)).returncode == 0
    assert _locations(cache) == kept  # what the output uses was kept: its rerun computes nothing

    # (The rerun may have added digests: those of inputs that had not settled when ours ran.)
    folder = cache / outcome_store.SEGMENTS
    before = sorted((path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir())
    folder.chmod(0o555)
    refused = run_module("beam_etl.beam.prune_cache", str(tmp_path / "ours"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "cannot write" in refused.stderr and str(cache) in refused.stderr, refused.stderr
    assert sorted((path.name, path.stat().st_size, path.stat().st_mtime_ns) for path in folder.iterdir()) == before


def test_a_prune_leaves_unreadable_files_it_keeps_nothing_of_and_checks_every_cache_first(data, tmp_path):
    """Another user's files of another version (none of their outcomes kept) are left too; and a
    prune of two outputs, the second's cache unwritable, prunes neither."""
    cache = tmp_path / "shared"
    preprocess.run(_flags(data, tmp_path / "theirs", "--cache", str(cache), "--image_size", "24"))
    theirs = _writer_files(cache)
    for name in theirs:
        (cache / outcome_store.SEGMENTS / name).chmod(0)
    assert _job(data, tmp_path / "ours", "--cache", str(cache)).returncode == 0
    assert _job(data, tmp_path / "other").returncode == 0  # (its own cache)
    (tmp_path / "other" / CACHE_DIR / outcome_store.SEGMENTS).chmod(0o555)
    files = (_writer_files(cache), _writer_files(tmp_path / "other" / CACHE_DIR))
    refused = run_module("beam_etl.beam.prune_cache", str(tmp_path / "ours"), str(tmp_path / "other"))
    assert refused.returncode == 2 and "cannot write to the cache" in refused.stderr, refused.stderr
    assert (_writer_files(cache), _writer_files(tmp_path / "other" / CACHE_DIR)) == files
    pruned = run_module("beam_etl.beam.prune_cache", str(tmp_path / "ours"))
    assert pruned.returncode == 0 and f"left {len(theirs)} files" in pruned.stdout, pruned.stdout
    assert set(theirs) <= set(_writer_files(cache))
