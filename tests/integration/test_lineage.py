"""Lineage: every output says where each example came from, a run that replaces an output says
what changed against it, and ``beam-etl diff`` compares any two outputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from beam_etl import diff
from beam_etl.beam import example_cache
from beam_etl.loader import verification
from beam_etl.output_layout import CHANGES_FILE
from beam_etl.tools import sample_data
from pipelines import preprocess
from tests.support.jobs import hang_guarded
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=14, seed=8, defects=True)
    return root


def _run(root, out, *extra):
    return preprocess.run(["--oxford_pets", str(root), "--output", str(out), "--image_size", "40x32",
                           "--num_shards", "2", "--augment_copies", "1",
                           *extra])


def _index(out) -> dict[str, dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    lines = [json.loads(line) for name in manifest["lineage"]["files"]
             for line in (out / name).read_text().splitlines()]
    assert len(lines) == len({line["key"] for line in lines})
    return {line["key"]: line for line in lines}


def test_every_example_says_where_it_came_from(root, tmp_path):
    out = tmp_path / "out"
    manifest = _run(root, out)
    index = _index(out)
    assert len(index) == manifest["num_written"] and manifest["num_rejected"] > 0
    rejected = {json.loads(line)["key"] for line in (out / manifest["rejected"]["file"]).read_text().splitlines()}
    assert not rejected & index.keys()
    recorded = {}  # example key -> shard, from the records themselves
    for split, info in manifest["splits"].items():
        for name in info["files"]:
            for example in read_examples([out / name]):
                recorded[example["key"]] = name
                source = index[example["key"].split("#aug")[0]]
                assert source["split"] == split and example["filename"] == source["image_uri"]
    assert recorded == {example["key"]: example["shard"] for line in index.values() for example in line["examples"]}
    for line in index.values():
        assert line["examples"][0]["key"] == line["key"]
        assert [name.startswith(f"lineage/{line['split']}-") for name in manifest["lineage"]["files"]
                if line["key"] in (out / name).read_text()] == [True]  # in the file of its original's shard
        for kind in ("image", "mask"):
            with open(line[f"{kind}_uri"], "rb") as handle:
                assert line[f"{kind}_sha256"] == hashlib.sha256(handle.read()).hexdigest()
    assert verification.verify(str(out)) == {} and "changes" not in manifest


def _run_globs(root, out, *extra):
    return preprocess.run(["--images", str(root / "images" / "*.jpg"),
                           "--masks", str(root / "annotations" / "trimaps" / "*.png"), "--output", str(out),
                           "--image_size", "40x32", "--num_shards", "2", *extra])


def test_a_replacing_run_says_what_changed_and_diff_agrees(tmp_path, capsys):
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=10, seed=4)
    out, before = tmp_path / "out", tmp_path / "before"
    _run_globs(root, out)
    shutil.copytree(out, before)
    masks = root / "annotations" / "trimaps"
    index = _index(out)
    kept = sorted(index)
    fixed = np.array(Image.open(masks / f"{kept[0]}.png"))
    half = (slice(0, fixed.shape[0] // 2), slice(0, fixed.shape[1] // 2))
    fixed[half] = fixed[half] % 3 + 1  # (trimap values 1-3, each another: a change the records show)
    Image.fromarray(fixed).save(masks / f"{kept[0]}.png")  # a labeller's fix
    (root / "images" / f"{kept[1]}.jpg").unlink()  # a removed input
    shutil.copy(root / "images" / f"{kept[2]}.jpg", root / "images" / "new_pet_1.jpg")  # an added one
    shutil.copy(masks / f"{kept[2]}.png", masks / "new_pet_1.png")
    manifest = _run_globs(root, out, "--overwrite")
    capsys.readouterr()
    expected = {"added": 1, "removed": 1, "changed": 1, "unchanged": len(index) - 2}
    assert manifest["changes"] == {"against_run": json.loads((before / "manifest.json").read_text())["run_id"],
                                   "file": CHANGES_FILE, **expected}
    assert [json.loads(line) for line in (out / CHANGES_FILE).read_text().splitlines()] == sorted(
        [{"change": "changed", "key": kept[0]}, {"change": "removed", "key": kept[1]},
         {"change": "added", "key": "new_pet_1"}], key=lambda line: line["key"])
    assert verification.verify(str(out)) == {}

    assert diff.main([str(before), str(out)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith(", ".join(f"{count} {what}" for what, count in expected.items()))
    assert sorted(printed[1:]) == sorted([f"~ {kept[0]}", f"- {kept[1]}", "+ new_pet_1"])
    assert diff.main([str(out), str(out), "--counts"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"0 added, 0 removed, 0 changed, {len(index)} unchanged")


def test_a_flag_that_shapes_every_example_changes_every_example(root, tmp_path, capsys):
    _run(root, tmp_path / "a")
    manifest = _run(root, tmp_path / "b", "--resize", "crop")
    capsys.readouterr()
    assert diff.main([str(tmp_path / "a"), str(tmp_path / "b"), "--counts"]) == 1
    printed = capsys.readouterr().out
    assert f"0 added, 0 removed, {manifest['num_written']} changed, 0 unchanged" in printed
    assert "the flags that shape examples differ" in printed


@pytest.mark.parametrize("setting", [("--no_statistics",), ("--seed", "7")])
def test_a_setting_that_leaves_the_records_as_they_were_changes_no_example(tmp_path, capsys, setting):
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=10, seed=4)
    out, before = tmp_path / "out", tmp_path / "before"
    _run_globs(root, out)  # (no augmented copies: the seed shapes nothing)
    shutil.copytree(out, before)
    manifest = _run_globs(root, out, "--overwrite", *setting)
    shards = [name for info in manifest["splits"].values() for name in info["files"]]
    assert shards and all((out / name).read_bytes() == (before / name).read_bytes() for name in shards)
    assert {key: manifest["changes"][key] for key in ("added", "removed", "changed", "unchanged")} == {
        "added": 0, "removed": 0, "changed": 0, "unchanged": manifest["num_written"]}
    assert (out / CHANGES_FILE).read_bytes() == b""
    capsys.readouterr()
    assert diff.main([str(before), str(out)]) == 0
    assert f"0 added, 0 removed, 0 changed, {manifest['num_written']} unchanged" in capsys.readouterr().out


def test_a_line_without_its_records_hashed_is_compared_by_outcome():
    from beam_etl import lineage  # pylint: disable=import-outside-toplevel

    hashed = {"a": {"key": "a", "outcome": "x", "records_sha256": "1"}, "b": {"key": "b", "outcome": "y"}}
    older = {"a": {"key": "a", "outcome": "x"}, "b": {"key": "b", "outcome": "y"}}
    other = {"a": {"key": "a", "outcome": "z", "records_sha256": "1"}, "b": {"key": "b", "outcome": "w"}}
    assert lineage.compare(older, hashed).counts() == {"added": 0, "removed": 0, "changed": 0, "unchanged": 2}
    assert lineage.compare(other, hashed).changed == ("b",)  # a: other outcome, the same records
    assert lineage.compare(older, other).changed == ("a", "b")
    assert lineage.compare({**hashed, "a": {**hashed["a"], "records_sha256": "2"}}, hashed).changed == ("a",)


def test_diff_names_the_chain_library_that_changed(root, tmp_path, capsys):
    manifest = _run(root, tmp_path / "a")
    assert manifest["lineage"]["chain_libraries"] == example_cache.library_versions()
    shutil.copytree(tmp_path / "a", tmp_path / "older")
    older = {**manifest, "lineage": {**manifest["lineage"], "chain_version": "0" * 64,
                                     "chain_libraries": {**manifest["lineage"]["chain_libraries"], "PIL": "9.0.0"}}}
    (tmp_path / "older" / "manifest.json").write_text(json.dumps(older))  # as an older Pillow wrote it
    capsys.readouterr()
    diff.main([str(tmp_path / "older"), str(tmp_path / "a"), "--counts"])
    assert (f"note: the per-image chain's libraries differ (PIL 9.0.0 -> {example_cache.library_versions()['PIL']}): "
            "every example is made anew") in capsys.readouterr().out


def test_diff_says_when_the_transform_graphs_label_ids_differ(root, tmp_path, capsys):
    """A label id is the class name's place in the training split's vocabulary (most frequent
    first, as tf.Transform orders it): data added to the training split can move them all."""
    manifest = _run(root, tmp_path / "a")
    names = manifest["statistics"]["class_names"]
    assert len(names) >= 2
    shutil.copytree(tmp_path / "a", tmp_path / "older")
    older = {**manifest, "statistics": {**manifest["statistics"], "class_names": [names[1], names[0], *names[2:]]}}
    (tmp_path / "older" / "manifest.json").write_text(json.dumps(older))  # as a version of other counts made it
    capsys.readouterr()
    assert diff.main([str(tmp_path / "older"), str(tmp_path / "a"), "--counts"]) == 0  # (no example changed)
    assert (f"note: the transform graph's label ids differ: {names[0]} 1 -> 0, {names[1]} 0 -> 1 (a label id is "
            "the class name's place in the training split's vocabulary, most frequent first)"
            ) in capsys.readouterr().out.splitlines()
    diff.main([str(tmp_path / "a"), str(tmp_path / "a"), "--counts"])
    assert "note:" not in capsys.readouterr().out


def test_a_replacing_run_and_diff_say_when_the_mask_class_ids_differ(tmp_path, capsys):
    """A mask value's class id is its place in the statistics' class_values: a value added to
    them (``--mask_values``, or a training mask holding one more) moves the ids every unchanged
    record's mask loads with, though no record changed."""
    root = tmp_path / "data"
    sample_data.generate(str(root), num_images=10, seed=4)
    out, before = tmp_path / "out", tmp_path / "before"
    assert _run_globs(root, out)["statistics"]["class_values"] == [1, 2, 3]
    shutil.copytree(out, before)
    capsys.readouterr()
    manifest = _run_globs(root, out, "--overwrite", "--mask_values", "0-3")
    assert manifest["statistics"]["class_values"] == [0, 1, 2, 3]
    assert {key: manifest["changes"][key] for key in ("added", "removed", "changed", "unchanged")} == {
        "added": 0, "removed": 0, "changed": 0, "unchanged": manifest["num_written"]}
    moved = "value 0 -1 -> 0, value 1 0 -> 1, value 2 1 -> 2, value 3 2 -> 3"
    note = "(a mask value's class id is its place in statistics.class_values, -1 where it has none)"
    assert (f"  note: the transform graph's mask class ids differ from the replaced output's: {moved} {note}"
            ) in capsys.readouterr().out.splitlines()
    assert diff.main([str(before), str(out), "--counts"]) == 0  # (no example changed, as for label ids)
    printed = capsys.readouterr().out.splitlines()
    assert f"note: the transform graph's mask class ids differ: {moved} {note}" in printed
    assert diff.main([str(out), str(before), "--counts"]) == 0
    assert ("note: the transform graph's mask class ids differ: value 1 1 -> 0, value 2 2 -> 1, value 3 3 -> 2, "
            f"value 0 0 -> -1 {note}") in capsys.readouterr().out.splitlines()


def test_diff_refuses_what_is_not_a_complete_output(root, tmp_path, capsys):
    _run(root, tmp_path / "a")
    capsys.readouterr()
    assert diff.main([str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
    assert "manifest.json does not exist" in capsys.readouterr().err
    manifest_path = tmp_path / "a" / "manifest.json"
    old_format = {**json.loads(manifest_path.read_text()), "format_version": 3}
    shutil.rmtree(tmp_path / "a" / "lineage")  # (format 3 had no lineage index)
    for name in [*old_format.pop("lineage")["files"], CHANGES_FILE]:
        old_format["files"].pop(name, None)
    old_format["flags"].pop("resize")  # (nor this flag, which came with format 4; the cache's came with 3)
    old_format["image"].pop("resize")
    manifest_path.write_text(json.dumps(old_format))
    assert diff.main([str(tmp_path / "a"), str(tmp_path / "a")]) == 2
    assert "has no lineage index" in capsys.readouterr().err
    replacing = _run(root, tmp_path / "a", "--overwrite")  # over an output written before lineage
    assert replacing["changes"]["unknown"].startswith("the output replaced has no lineage index")
    assert not (tmp_path / "a" / CHANGES_FILE).exists() and verification.verify(str(tmp_path / "a")) == {}


def _drop_a_lineage_file(manifest):
    del manifest["files"][manifest["lineage"]["files"].pop()]


@pytest.mark.parametrize("edit, named", [
    (_drop_a_lineage_file, "the lineage index lists 5 files, not one per shard (6)"),
    (lambda m: m.update(splits="x"), "'splits' is not an object"),
    (lambda m: m.update(files=[]), "'files' is not an object"),
    (lambda m: m.update(flags=[]), "'flags' is not an object"),
    (lambda m: m["flags"].update(cache_dir=123), "flags.cache_dir is not a folder's name"),
    (lambda m: m["flags"].update(cache_dir=["a"]), "flags.cache_dir is not a folder's name"),
    (lambda m: m["flags"].update(use_cache="no"), "flags.use_cache is not true or false"),
    (lambda m: m["splits"]["val"]["files"].append(m["splits"]["train"]["files"][0]),
     "which is not a shard of split 'val'"),
])
def test_diff_and_prune_refuse_a_manifest_edited_to_say_what_is_not_so(root, tmp_path, capsys, edit, named):
    out = tmp_path / "out"
    _run(root, out)
    cache = sorted(path.name for path in (out / ".beam-etl-cache").rglob("*"))
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    edit(manifest)
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert diff.main([str(out), str(out)]) == 2
    assert named in capsys.readouterr().err
    from beam_etl.beam import prune_cache  # pylint: disable=import-outside-toplevel

    assert prune_cache.main([str(out)]) == 2
    said = capsys.readouterr().err
    assert named in said and "nothing was pruned" in said
    assert sorted(path.name for path in (out / ".beam-etl-cache").rglob("*")) == cache


def _first_line_moved(lines: list[str], other: list[str]) -> tuple[list[str], list[str]]:
    """The first line of ``lines`` appended to ``other`` as well (a key in two files)."""
    return lines, [*other, lines[0]]


@pytest.mark.parametrize("damage", ["a line that is no entry", "a line deleted", "a line edited",
                                    "a key in two files"])
def test_a_damaged_lineage_index_is_reported_not_fatal_and_never_read_as_changes(root, tmp_path, capsys, damage):
    out = tmp_path / "a"
    _run(root, out)
    manifest = json.loads((out / "manifest.json").read_text())
    first, second = (out / name for name in manifest["lineage"]["files"][:2])
    lines, other = first.read_text().splitlines(True), second.read_text().splitlines(True)
    if damage == "a line that is no entry":
        lines.append('{"key": "zzz"}\n')
    elif damage == "a line deleted":
        lines = lines[1:]
    elif damage == "a line edited":
        lines[0] = lines[0].replace('"outcome": "', '"outcome": "0', 1)
    else:
        lines, other = _first_line_moved(lines, other)
    first.write_text("".join(lines))
    second.write_text("".join(other))
    capsys.readouterr()
    assert diff.main([str(out), str(out)]) == 2
    assert "is not the file the manifest describes" in capsys.readouterr().err
    replacing = _run(root, out, "--overwrite")  # the replacement goes on; what changed is unknown
    assert replacing["changes"]["unknown"].startswith("the output replaced has an unreadable lineage index")
    assert "added" not in replacing["changes"] and verification.verify(str(out)) == {}


def test_a_fifo_in_place_of_a_lineage_file_is_named_never_waited_on(root, tmp_path):
    """Every reader of the lineage index refuses a FIFO in a file's place by its type: a read of
    it would wait for ever for a writer (a replacing run holding its lease meanwhile). Each
    command in a process an alarm stops."""
    out = tmp_path / "a"
    _run(root, out)
    name = json.loads((out / "manifest.json").read_text())["lineage"]["files"][0]
    (out / name).unlink()
    os.mkfifo(out / name)
    refused = f"{out / name}: not a regular file"
    for command, status, said in [
            (["diff", out, out], 2, refused),
            (["prune-cache", out], 2, refused),
            (["load", "--data", out, "--preview", tmp_path / "p.png", "--keys", "no-such-key"], 1, "no example"),
            (["preprocess", "--oxford_pets", root, "--output", out, "--image_size", "40x32", "--num_shards", "2",
              "--augment_copies", "1", "--overwrite"], 0, "unreadable lineage index")]:
        done = hang_guarded(command, seconds=120)
        assert "HUNG" not in done.stdout and done.returncode == status, (command, done.stdout, done.stderr[-2000:])
        assert said in done.stdout + done.stderr, (command, done.stdout, done.stderr[-2000:])
    # (the replacing run took the FIFO's name back with the file it wrote there, and let go of the output)
    assert verification.verify(str(out)) == {} and not (out / "lease.json").exists()
    assert json.loads((out / "manifest.json").read_text())["changes"]["unknown"].startswith(
        f"the output replaced has an unreadable lineage index: {refused}")


def test_an_index_read_alone_refuses_a_key_twice():
    from beam_etl import lineage  # pylint: disable=import-outside-toplevel

    line = b'{"examples": [], "image_sha256": "i", "key": "a", "mask_sha256": "m", "outcome": "x"}\n'
    assert list(lineage.read_index(line)) == ["a"]
    with pytest.raises(ValueError, match="line 1 of the lineage index is not an entry"):  # (what prune-cache keeps)
        lineage.read_index(line.replace(b'"image_sha256": "i", ', b""))
    with pytest.raises(ValueError, match="line 2 of the lineage index names 'a' again"):
        lineage.read_index(line * 2)
    with pytest.raises(ValueError, match="names 'a' in two files"):
        lineage.merge_listed([lineage.read_index(line), lineage.read_index(line)])


def test_a_key_that_does_not_print_is_shown_quoted_on_its_own_line():
    assert [diff.shown_key(key) for key in ("cat 1", "Ünïcödé", "evil\n- dup", "tab\tx")] == [
        "cat 1", "Ünïcödé", '"evil\\n- dup"', '"tab\\tx"']
