"""``beam-etl prune-cache``: the cache of outcomes cut down to what the named outputs use, and
those outputs' reruns still decode and read nothing."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from beam_etl import file_states
from beam_etl.beam import outcome_store, prune_cache
from beam_etl.output_layout import CACHE_DIR, INCOMPLETE_DIR, LEASE
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support.jobs import output_files

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setattr(file_states, "SETTLE_SECONDS", 0.0)  # (written moments ago, and left alone)
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=10, seed=2)
    return root


def _run(root, out, *extra):
    return preprocess.run(["--images", str(root / "images" / "*.jpg"),
                           "--masks", str(root / "annotations" / "trimaps" / "*.png"),
                           "--output", str(out), "--image_size", "40x32", "--num_shards", "2", *extra])


def _store_files(cache):
    return sorted(os.listdir(cache / outcome_store.SEGMENTS))


def test_only_what_the_named_outputs_use_is_kept(data, tmp_path, decodes, reads, capsys):
    out, other = tmp_path / "out", tmp_path / "other"
    cache = tmp_path / "cache"
    _run(data, out, "--cache", str(cache), "--image_size", "24x24")  # a version the output no longer uses
    _run(data, out, "--cache", str(cache), "--overwrite")
    _run(data, other, "--cache", str(cache), "--image_format", "png")
    store = outcome_store.OutcomeStore(str(cache))
    assert len(store.entries()) == 30 and len(store.digests()) == 20
    before = _store_files(cache)
    assert prune_cache.main([str(out), "--cache", str(cache)]) == 0
    said = capsys.readouterr().out
    assert "kept 10 of 30 outcomes" in said and "20 digests of 20" in said
    after = _store_files(cache)
    assert not set(before) & set(after) and len(after) == 3  # one writer's segment, index, digests
    store = outcome_store.OutcomeStore(str(cache))
    assert len(store.entries()) == 10 and len(store.digests()) == 20
    shards = output_files(out)
    decodes.clear()
    reads.clear()
    _run(data, out, "--cache", str(cache), "--overwrite", "--num_shards", "3")  # the job runs, on the cache
    _run(data, out, "--cache", str(cache), "--overwrite")
    assert decodes == [] and reads == [] and output_files(out) == shards
    _run(data, other, "--cache", str(cache), "--image_format", "png", "--overwrite", "--num_shards", "3")
    assert len(decodes) == 10  # not named: computed again (nothing in an output depends on the cache)


def test_an_outputs_own_cache_and_a_refusal_while_a_run_holds_it(data, tmp_path, decodes, capsys):
    out = tmp_path / "out"
    _run(data, out, "--seed", "1")
    _run(data, out, "--overwrite")
    assert prune_cache.main([str(out)]) == 0
    assert len(outcome_store.OutcomeStore(str(out / CACHE_DIR)).entries()) == 10
    (out / INCOMPLETE_DIR).mkdir()
    (out / LEASE).write_text("{}")  # a run's lease (what is in it does not matter here)
    capsys.readouterr()
    assert prune_cache.main([str(out)]) == 2
    assert "a run holds" in capsys.readouterr().err
    shutil.rmtree(out / INCOMPLETE_DIR)
    assert prune_cache.main([str(tmp_path / "nothing here")]) == 2


def test_the_cache_an_output_was_made_with_is_the_one_pruned_and_no_other(data, tmp_path, capsys):
    out, other = tmp_path / "out", tmp_path / "other"
    cache, other_cache = tmp_path / "cache", tmp_path / "other-cache"
    _run(data, out, "--cache", str(cache), "--image_size", "24x24")  # a version the output no longer uses
    _run(data, out, "--cache", str(cache), "--overwrite")
    _run(data, other, "--cache", str(other_cache))
    other_files = {name: (other_cache / outcome_store.SEGMENTS / name).read_bytes() for name in _store_files(other_cache)}
    capsys.readouterr()
    # Another cache named: refused, naming the flag, the value and the cache the output was made with.
    assert prune_cache.main([str(out), "--cache", str(other_cache)]) == 2
    said = capsys.readouterr().err
    assert f"--cache {str(other_cache)!r}: {out} was made with the cache {str(cache)!r}" in said
    assert "nothing was pruned" in said
    assert {name: (other_cache / outcome_store.SEGMENTS / name).read_bytes()
            for name in _store_files(other_cache)} == other_files
    assert len(outcome_store.OutcomeStore(str(cache)).entries()) == 20
    # None named: the manifest's; the output's own folder is left as it is.
    assert prune_cache.main([str(out)]) == 0
    assert f"{cache}: kept 10 of 20 outcomes" in capsys.readouterr().out
    assert not (out / CACHE_DIR).exists()
    # Named as the output was made with, spelled another way: the same cache.
    assert prune_cache.main([str(out), "--cache", str(cache) + "/"]) == 0
    assert "kept 10 of 10 outcomes" in capsys.readouterr().out


def test_a_folder_that_holds_no_cache_and_an_output_without_one_are_refused_untouched(data, tmp_path, capsys):
    out, uncached, gone = tmp_path / "out", tmp_path / "uncached", tmp_path / "gone"
    _run(data, out)
    _run(data, uncached, "--no_cache")
    _run(data, gone, "--cache", str(tmp_path / "deleted"))
    shutil.rmtree(tmp_path / "deleted")
    own = sorted((out / CACHE_DIR / outcome_store.SEGMENTS).iterdir())
    capsys.readouterr()
    typo, deleted = str(tmp_path / "typo"), str(tmp_path / "deleted")
    for flags, said in [([str(out), "--cache", typo], f"--cache {typo!r}: {out} was made with the cache"),
                        ([str(out), "--cache", str(out)], f"--cache {str(out)!r}: {out} was made with the cache"),
                        ([str(uncached)], f"{uncached} was made with --no_cache"),
                        ([str(out), str(uncached)], f"{uncached} was made with --no_cache"),
                        ([str(gone)], f"{deleted!r} holds no cache of outcomes"),
                        ([str(gone), "--cache", deleted], f"--cache {deleted!r} holds no cache of outcomes")]:
        assert prune_cache.main(flags) == 2
        assert said in capsys.readouterr().err
    assert not (tmp_path / "typo").exists() and not (tmp_path / "deleted").exists()
    assert not (out / outcome_store.SEGMENTS).exists()
    assert sorted((out / CACHE_DIR / outcome_store.SEGMENTS).iterdir()) == own
    assert not (uncached / CACHE_DIR).exists()


def test_one_cache_spelled_two_ways_is_one_cache_and_a_relative_one_is_recorded_absolute(
        data, tmp_path, capsys, monkeypatch):
    out, other, cache = tmp_path / "out", tmp_path / "other", tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    _run(data, out, "--cache", "cache")  # relative: recorded as the absolute folder
    _run(data, other, "--cache", f"{cache}/", "--image_format", "png")
    assert json.loads((out / "manifest.json").read_text())["flags"]["cache_dir"] == str(cache)
    monkeypatch.chdir(data)  # the prune runs elsewhere
    capsys.readouterr()
    assert prune_cache.main([str(out), str(other)]) == 0
    said = capsys.readouterr().out
    assert said.count("kept 20 of 20 outcomes") == 1 and said.count("\n") == 1  # pruned once, keeping both
    assert len(outcome_store.OutcomeStore(str(cache)).entries()) == 20
