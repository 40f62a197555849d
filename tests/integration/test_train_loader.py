"""The tf.data loader on real shards written by the job (``raw_output``: raw records, 40x32)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from beam_etl import loader
from beam_etl.loader import cli, listed_files, load_run, preview, verification, verify
from beam_etl.loader import dataset as dataset_module
from tests.support import file_modes
from tests.support.jobs import hang_guarded, run_job
from tests.support.tfrecords import read_examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow  # every test needs the job's output


def _batches(dataset):
    return [(image.numpy(), mask.numpy()) for image, mask in dataset]


def _examples(dataset):
    return [(image, mask) for images, masks in _batches(dataset) for image, mask in zip(images, masks)]


def _digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _stored(out, manifest, split="train"):
    """digest of the stored uint8 image -> stored mask, from TensorFlow reading the files itself."""
    examples = read_examples([out / name for name in manifest["splits"][split]["files"]])
    return {_digest(e["image"]): e["mask"] for e in examples}


def test_every_record_once_normalized_with_class_ids(raw_output):
    out, manifest = raw_output
    examples = _examples(loader.make_dataset(str(out), "train", 5, shuffle=False))
    stored = _stored(out, manifest)
    assert len(examples) == manifest["splits"]["train"]["num_examples"] == len(stored)
    seen = set()
    for image, mask in examples:
        assert image.dtype == np.float32 and image.shape == (40, 32, 3)
        assert mask.dtype == np.int32 and mask.shape == (40, 32)
        digest = _digest(loader.denormalize(image, manifest["statistics"]))
        seen.add(digest)
        np.testing.assert_array_equal(mask, stored[digest].astype(np.int32) - 1)  # trimap 1,2,3 -> 0,1,2
    assert seen == set(stored)
    pixels = np.stack([image for image, _ in examples]).reshape(-1, 3)
    assert abs(pixels.mean()) < 0.5  # normalized with the statistics (of the originals only)


@pytest.mark.parametrize("split", ["train", "val"])
def test_normalize_on_device_feeds_uint8_that_the_layer_turns_into_the_graphs_output(raw_output, split):
    out, manifest = raw_output
    on_host = _batches(loader.make_dataset(str(out), split, 5, shuffle=False, deterministic=True))
    on_device = _batches(loader.make_dataset(str(out), split, 5, shuffle=False, deterministic=True,
                                                   normalize_on_device=True))
    layer = loader.normalization_layer(str(out))
    assert len(on_device) == len(on_host) >= (2 if split == "train" else 1)
    for (image, mask), (pixels, ids) in zip(on_host, on_device):
        assert pixels.dtype == np.uint8 and ids.dtype == np.int8
        np.testing.assert_allclose(np.asarray(layer(pixels)), image, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(ids, mask)
    stats = manifest["statistics"]
    np.testing.assert_allclose(layer.scale, 1 / np.array(stats["pixel_std"]), rtol=1e-6)
    np.testing.assert_allclose(layer.offset, -np.array(stats["pixel_mean"]) / stats["pixel_std"], rtol=1e-6)


def test_deterministic_order_from_the_seed(raw_output):
    out, _ = raw_output

    def order(seed):
        dataset = loader.make_dataset(str(out), "train", 4, deterministic=True, seed=seed)
        return [_digest(image) for image, _ in _examples(dataset)]

    first = order(7)
    assert order(7) == first
    assert order(8) != first and sorted(order(8)) == sorted(first)


@pytest.mark.parametrize("workers", [2, 3])  # 2 files per split: shared by file, then by record
def test_input_contexts_share_out_every_example_once(raw_output, workers):
    out, manifest = raw_output
    everything = sorted(_digest(image) for image, _ in _examples(
        loader.make_dataset(str(out), "train", 8, shuffle=False)))
    shares = []
    for index in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=index,
                                             num_replicas_in_sync=workers)
        batches = _batches(loader.make_dataset(str(out), "train", 8 * workers, input_context=context))
        assert all(len(images) <= 8 for images, _ in batches)  # per-replica batch
        shares.append([_digest(image) for images, _ in batches for image in images])
    assert all(shares)
    assert sorted(d for share in shares for d in share) == everything
    if workers > len(manifest["splits"]["train"]["files"]):  # shared by record: even shares of the split
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("counts, workers, held", [
    ([15, 5, 12, 8, 6, 10], 3, [20, 18, 18]),  # by position: 23, 11 and 22
    ([2, 2, 0, 0, 2], 3, [2, 2, 2]),  # (by position: 2, 2 and 0, a pipeline of empty files)
    ([7, 0, 0], 1, [7]),
    ([9, 1, 1, 1, 1, 1], 2, [9, 5]),
])
def test_input_pipelines_get_shares_of_files_as_even_as_the_files_allow(counts, workers, held):
    shares = dataset_module.share_files(counts, workers)
    assert sorted(i for share in shares for i in share) == list(range(len(counts)))  # every file, once
    assert [sum(counts[i] for i in share) for share in shares] == held


@pytest.mark.parametrize("counts, workers", [([5, 0, 0, 3], 3), ([4], 2)])
def test_fewer_files_holding_records_than_pipelines_are_shared_by_record(counts, workers):
    assert dataset_module.share_files(counts, workers) is None


def test_pipelines_sharing_records_get_even_shares_of_the_split_not_of_each_file(raw_output):
    """More pipelines than the records of any one file: shares of each file's records would
    leave the last pipelines none (their epochs would end at once); shares of the split do not."""
    out, manifest = raw_output
    info = manifest["splits"]["test"]
    per_file = [manifest["files"][name]["num_examples"] for name in info["files"]]
    workers = max(per_file) + 1
    assert workers <= info["num_examples"]  # (two files hold records: the case)
    shares = []
    for index in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=index,
                                             num_replicas_in_sync=workers)
        shares.append(len(_examples(loader.make_dataset(str(out), "test", workers, shuffle=False,
                                                        input_context=context, normalize_on_device=True))))
    assert sum(shares) == info["num_examples"] and min(shares) >= 1 and max(shares) - min(shares) <= 1


def test_counts_unknown_share_files_by_position():
    assert dataset_module.share_files([None] * 5, 2) == [[0, 2, 4], [1, 3]]


def test_fewer_examples_than_input_pipelines_are_refused(raw_output):
    out, manifest = raw_output
    workers = manifest["splits"]["val"]["num_examples"] + 1
    context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=0, num_replicas_in_sync=workers)
    with pytest.raises(ValueError, match=f"fewer than the {workers} input pipelines"):
        loader.make_dataset(str(out), "val", workers, input_context=context)


def test_augment_flips_image_and_mask_together_reproducibly(raw_output):
    out, _ = raw_output
    plain = {_digest(image): (image, mask) for image, mask in _examples(
        loader.make_dataset(str(out), "train", 4, shuffle=False))}

    def augmented():
        return _examples(loader.make_dataset(str(out), "train", 4, shuffle=False, augment=True,
                                                   deterministic=True, seed=3))

    flipped = 0
    for image, mask in augmented():
        if _digest(image) in plain:
            original_mask = plain[_digest(image)][1]
        else:
            original, original_mask = plain[_digest(image[:, ::-1])]
            original_mask = original_mask[:, ::-1]
            flipped += 1
        np.testing.assert_array_equal(mask, original_mask)
    assert 0 < flipped < len(plain)
    assert [_digest(i) for i, _ in augmented()] == [_digest(i) for i, _ in augmented()]


def test_each_pass_over_one_dataset_flips_anew_and_the_passes_are_reproducible(raw_output):
    """Keras's epochs without ``repeat``: each pass over the dataset is an epoch; the same
    examples flipped in every one would make fewer distinct images than the flag promises."""
    out, _ = raw_output

    def passes():
        dataset = loader.make_dataset(str(out), "train", 4, shuffle=False, augment=True, deterministic=True, seed=3)
        return [[_digest(image) for image, _ in _examples(dataset)] for _ in range(3)]

    first = passes()
    assert first[0] != first[1] and first[1] != first[2]
    assert passes() == first


def test_static_shapes_with_drop_remainder_and_cache(raw_output):
    out, manifest = raw_output
    dataset = loader.make_dataset(str(out), "train", 4, drop_remainder=True, cache=True)
    assert dataset.element_spec[0].shape.as_list() == [4, 40, 32, 3]
    assert dataset.element_spec[1].shape.as_list() == [4, 40, 32]
    first, second = (sum(len(images) for images, _ in _batches(dataset)) for _ in range(2))
    assert first == second == manifest["splits"]["train"]["num_examples"] // 4 * 4


def test_a_record_that_does_not_parse_names_its_file(raw_output, tmp_path):
    out, manifest = raw_output
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    bad_file = broken / manifest["splits"]["train"]["files"][1]
    with tf.io.TFRecordWriter(str(bad_file)) as writer:
        writer.write(tf.train.Example().SerializeToString())  # no image/encoded
    listed = json.loads((broken / "manifest.json").read_text())  # a manifest that agrees with it
    listed["splits"]["train"]["num_examples"] += 1 - listed["files"][bad_file.name]["num_examples"]
    listed["num_examples"] += 1 - listed["files"][bad_file.name]["num_examples"]
    listed["splits"]["train"]["bytes"] += bad_file.stat().st_size - listed["files"][bad_file.name]["bytes"]
    listed["files"][bad_file.name].update(bytes=bad_file.stat().st_size, num_examples=1)
    listed["files"][f"{bad_file.name}.idx"]["num_records"] = 1
    (broken / "manifest.json").write_text(json.dumps(listed))
    with pytest.raises(tf.errors.InvalidArgumentError, match=str(bad_file)):
        _batches(loader.make_dataset(str(broken), "train", 4))


def test_refuses_a_directory_without_manifest_or_an_unknown_split(raw_output, tmp_path):
    out, _ = raw_output
    with pytest.raises(loader.IncompleteOutputError, match="manifest.json does not exist"):
        loader.make_dataset(str(tmp_path), "train", 4)
    with pytest.raises(ValueError, match="'dev' is not in"):
        loader.make_dataset(str(out), "dev", 4)


def test_tf_data_service_with_in_process_dispatcher_and_workers(raw_output):
    out, manifest = raw_output
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    workers = [tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(dispatcher_address=address)) for _ in range(2)]
    dataset = loader.make_dataset(str(out), "train", 4, data_service_address=dispatcher.target)
    digests = [_digest(image) for image, _ in _examples(dataset)]
    assert sorted(digests) == sorted(_digest(image) for image, _ in _examples(
        loader.make_dataset(str(out), "train", 4, shuffle=False)))
    figures = loader.main(["--data", str(out), "--batch_size", "4", "--steps", "3", "--json",
                           "--data_service_address", dispatcher.target])  # the command finds it too
    assert figures["batches"] == 3 and figures["images"] == 12
    del workers


def test_cli_prints_throughput_as_json(raw_output, capsys):
    out, _ = raw_output
    figures = loader.main(["--data", str(out), "--batch_size", "4", "--steps", "5", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(figures))
    assert printed["images"] == 20 and printed["batches"] == 5
    assert printed["images_per_s"] > 0 and printed["mb_per_s"] > 0


def test_cli_preview_draws_images_and_mask_overlays(raw_output, tmp_path):
    out, _ = raw_output
    path = tmp_path / "grid.png"
    loader.main(["--data", str(out), "--preview", str(path), "--preview_count", "3", "--columns", "2"])
    picture = np.asarray(tf.io.decode_png(path.read_bytes()))
    zoom, caption, gap = 128 // 40, 16, 4
    cell_w = 2 * 32 * zoom
    # 2 rows of (tile + caption + gap), then one legend row for the 3 mask values, + gap
    assert picture.shape == (2 * (40 * zoom + caption + gap) + caption + gap, 2 * cell_w + gap, 3)
    left, right = picture[: 40 * zoom, : 32 * zoom], picture[: 40 * zoom, 32 * zoom:cell_w]
    assert not np.array_equal(left, right)  # the overlay tints the right-hand copy
    legend = picture[-(caption + gap):]
    for value in (1, 2, 3):  # every value in the masks has its swatch in the legend
        assert (legend == preview.colour_of(value)).all(axis=-1).sum() >= 6 * 10


def test_a_preview_with_more_columns_than_examples_is_as_wide_as_its_examples(raw_output, tmp_path):
    """--columns past the examples shown: one row of them (a canvas of the columns asked for
    would be terabytes wide)."""
    out, _ = raw_output
    pictures = []
    for columns in ("3", "100000000"):
        path = tmp_path / f"grid{columns}.png"
        loader.main(["--data", str(out), "--preview", str(path), "--preview_count", "3", "--columns", columns])
        pictures.append(np.asarray(tf.io.decode_png(path.read_bytes())))
    zoom, caption, gap = 128 // 40, 16, 4
    assert pictures[1].shape == (40 * zoom + caption + gap + caption + gap, 3 * (2 * 32 * zoom + gap) - gap, 3)
    assert np.array_equal(*pictures)


def test_the_preview_shows_chosen_keys_in_colours_fixed_per_mask_value(pets_dir, tmp_path):
    """The same examples give the same picture with and without statistics (whose transform
    renumbers mask values): colours belong to the values the records hold."""
    pictures = []
    for name, extra in (("with", []), ("without", ["--no_statistics"])):
        out = tmp_path / name
        run_job(pets_dir, out, *extra)
        keys = sorted(json.loads(line)["key"] for name_ in json.loads((out / "manifest.json").read_text())[
            "lineage"]["files"] if "/train-" in name_ for line in (out / name_).read_text().splitlines())[:3]
        path = tmp_path / f"{name}.png"
        loader.main(["--data", str(out), "--preview", str(path), "--keys", ",".join(reversed(keys)),
                     "--columns", "3"])
        pictures.append(np.asarray(tf.io.decode_png(path.read_bytes())))
    assert np.array_equal(*pictures)
    examples = preview.read_examples(str(tmp_path / "with"), "train", 0, list(reversed(keys)))
    assert [example["key"] for example in examples] == list(reversed(keys))
    image, mask = examples[0]["image"], examples[0]["mask"]
    height, width = mask.shape
    zoom = max(1, 128 // height)
    overlay = pictures[0][: height * zoom: zoom, width * zoom: 2 * width * zoom: zoom]
    expected = (0.55 * image + 0.45 * preview.MASK_COLOURS[mask % 8]).astype(np.uint8)
    np.testing.assert_array_equal(overlay, expected)
    with pytest.raises(SystemExit, match="--keys: no example 'nope'"):
        loader.main(["--data", str(tmp_path / "with"), "--preview", str(tmp_path / "x.png"), "--keys", "nope"])
    lineage = json.loads((tmp_path / "with" / "manifest.json").read_text())["lineage"]["files"]
    elsewhere = next(json.loads(line)["key"] for name_ in lineage if "/test-" in name_
                     for line in (tmp_path / "with" / name_).read_text().splitlines())
    with pytest.raises(ValueError, match=rf"no example '{elsewhere}' in split 'train' of .*\('{elsewhere}' is in "
                                         r"split 'test': --split test\)"):
        preview.read_examples(str(tmp_path / "with"), "train", 0, [elsewhere])


def test_cli_rejects_bad_flags_naming_them(raw_output, tmp_path, capsys):
    out, _ = raw_output
    with pytest.raises(SystemExit):
        loader.main(["--data", str(out), "--batch_size", "0"])
    assert "--batch_size: invalid value '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # not an output: a wrong flag, as the others
        loader.main(["--data", str(tmp_path)])
    assert exited.value.code == 2 and f"--data {str(tmp_path)!r}: " in capsys.readouterr().err


def test_cli_refuses_a_split_with_nothing_to_load_or_show(pets_dir, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = run_job(pets_dir, out, "--val_fraction", "0")
    assert manifest["splits"]["val"]["num_examples"] == 0
    for flags in ([], ["--preview", str(tmp_path / "val.png")]):
        with pytest.raises(SystemExit) as exited:
            loader.main(["--data", str(out), "--split", "val", *flags])
        assert exited.value.code == 2
        assert "--split 'val': the output's split 'val' holds no example" in capsys.readouterr().err
    assert not (tmp_path / "val.png").exists()


@pytest.mark.parametrize("flags, named", [
    (["--split", "dev"], "--split 'dev': the output has splits test, train, val"),
    (["--seed", str(2 ** 63), "--augment"], f"--seed: invalid value '{2 ** 63}'"),
    (["--seed", str(-2 ** 63 - 1)], f"--seed: invalid value '{-2 ** 63 - 1}'"),
    (["--data_service_address", "bogus"], "--data_service_address: invalid value 'bogus': expected [grpc://]HOST:PORT"),
    (["--data_service_address", "grpc://localhost:99999"], "--data_service_address: invalid value"),
    (["--data_service_address", "grpc://127.0.0.1:CLOSED"], "--data_service_address 'grpc://127.0.0.1:CLOSED': no "
                                                          "tf.data service dispatcher answers there"),
    (["--preview", "FOLDER/missing/grid.png"], "--preview 'FOLDER/missing/grid.png': folder 'FOLDER/missing' does not exist"),
    (["--preview", "FOLDER/grid.txt"], "--preview 'FOLDER/grid.txt': expected a .png file"),
    (["--data", ""], "--data: invalid value ''"),
    (["--batch_size", str(2 ** 64)], f"--batch_size: invalid value '{2 ** 64}': must be at most 2**63 - 1"),
])
def test_cli_refuses_a_wrong_flag_at_once_naming_it(raw_output, tmp_path, capsys, flags, named):
    """Before reading a record, with exit status 2 and no traceback: a wrong split, a seed
    TensorFlow cannot hold, an address where no dispatcher answers (the loader would wait for
    one forever), a preview it could not write."""
    out, _ = raw_output
    with socket.socket() as closed:  # a port with no one listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    flags = [flag.replace("CLOSED", str(port)).replace("FOLDER", str(tmp_path)) for flag in flags]
    named = named.replace("CLOSED", str(port)).replace("FOLDER", str(tmp_path))
    data = [] if "--data" in flags else ["--data", str(out)]
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        loader.main([*data, "--steps", "2", *flags])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
    assert time.perf_counter() - started < 30
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_cli_refuses_a_batch_larger_than_the_machine_s_memory_naming_the_flag(raw_output, capsys, monkeypatch):
    """A batch of 10**12 would grow the process until it is killed (a repeating dataset never fills it):
    refused once the manifest gives the examples' size, with what it needs and what the machine has,
    before a dataset is made (here a dataset made fails the test rather than fill the memory)."""
    out, _ = raw_output
    monkeypatch.setattr(load_run, "make_dataset", lambda *args, **kwargs: pytest.fail("a dataset was made"))
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        loader.main(["--data", str(out), "--batch_size", str(10 ** 12), "--steps", "1"])
    assert exited.value.code == 2
    needed = 10 ** 12 * 40 * 32 * (3 + 1) * 4  # (float32 images of 3 channels, int32 masks)
    said = capsys.readouterr().err
    assert f"--batch_size {10 ** 12}: a batch of {10 ** 12} decoded 40x32 examples" in said
    assert f"needs {needed} bytes, more than this machine's memory ({memory} bytes)" in said
    assert time.perf_counter() - started < 30


def test_cli_refuses_a_preview_inside_the_output_by_path_or_by_link(raw_output, tmp_path, capsys):
    """The preview would be one more file than the manifest lists, or, written through a link,
    would replace one of them (the manifest itself)."""
    out, _ = raw_output
    manifest = (out / "manifest.json").read_bytes()
    listing = sorted(path.relative_to(out) for path in out.rglob("*"))
    (tmp_path / "grid.png").symlink_to(out / "manifest.json")
    (tmp_path / "dangling.png").symlink_to(out / "transform_fn" / "grid.png")
    for picture in (out / "grid.png", out / "transform_fn" / "grid.png", tmp_path / "grid.png",
                    tmp_path / "dangling.png"):
        with pytest.raises(SystemExit) as exited:
            loader.main(["--data", str(out), "--preview", str(picture)])
        assert exited.value.code == 2
        assert f"--preview {str(picture)!r} is inside OUT" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == manifest
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == listing


def test_cli_refuses_a_preview_this_user_may_not_write(raw_output, tmp_path):
    out, _ = raw_output
    tmp_path.chmod(0o555)
    try:
        refused = file_modes.run_module("beam_etl.train_loader", "--data", str(out), "--preview",
                                        str(tmp_path / "grid.png"))
    finally:
        tmp_path.chmod(0o755)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"--preview {str(tmp_path / 'grid.png')!r}: this user may not write to {str(tmp_path)!r}" in refused.stderr
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d.png").mkdir()
    with pytest.raises(SystemExit) as exited:
        loader.main(["--data", str(out), "--preview", str(tmp_path / "d.png")])
    assert exited.value.code == 2


def test_cli_train_steps_reports_how_input_bound_training_is(raw_output):
    out, _ = raw_output
    figures = loader.main(["--data", str(out), "--batch_size", "4", "--train_steps", "3", "--json"])
    assert figures["train_steps"] == 3 and figures["batch_size"] == 4
    assert figures["step_ms_loader"] > 0 and figures["step_ms_in_memory"] > 0
    assert figures["loader_slowdown"] == pytest.approx(figures["step_ms_loader"] / figures["step_ms_in_memory"])
    on_device = loader.main(["--data", str(out), "--batch_size", "4", "--train_steps", "2",
                                   "--normalize_on_device", "--json"])
    assert on_device["train_steps"] == 2 and on_device["step_ms_loader"] > 0


_DISTRIBUTED = """
import sys
import time
import tensorflow as tf
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from beam_etl import loader
from beam_etl.loader import preview, verify
from tests.support.jobs import run_job
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
dataset = loader.distribute(strategy, sys.argv[1], "train", 8)
per_replica = [0, 0]
for image, mask in dataset:
    for i, part in enumerate(strategy.experimental_local_results(image)):
        per_replica[i] += int(part.shape[0])
print(per_replica)
"""


def test_distribute_datasets_from_function_under_mirrored_strategy(raw_output):
    out, manifest = raw_output
    result = subprocess.run([sys.executable, "-c", _DISTRIBUTED, str(out)], capture_output=True,
                            text=True, check=True, timeout=300)
    per_replica = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(per_replica) == manifest["splits"]["train"]["num_examples"]
    assert all(per_replica)


@pytest.mark.parametrize("path, expected", [("/data/out", 0), ("relative/out", 0), ("file:///data/out", 0),
                                            ("gs://bucket/out", 8 << 20), ("s3://bucket/out", 8 << 20)])
def test_local_files_are_read_unbuffered_and_remote_ones_in_large_requests(path, expected):
    assert loader.read_buffer_size(path) == expected


def _copy_of(raw_output, tmp_path):
    out, manifest = raw_output
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy, manifest["splits"]["train"]["files"]


def _rewrite(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


@pytest.mark.parametrize("change", ["cut short", "extended", "replaced by another"])
def test_a_shard_that_differs_from_its_manifest_entry_raises_naming_it(raw_output, tmp_path, change):
    copy, (first, second) = _copy_of(raw_output, tmp_path)
    target = copy / first
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(target))]
    if change == "cut short":
        _rewrite(target, records[:-1])  # at a record boundary: TensorFlow's reader sees nothing wrong
    elif change == "extended":
        _rewrite(target, records + records[:1])
    else:
        assert (copy / second).stat().st_size != target.stat().st_size
        shutil.copyfile(copy / second, target)
    with pytest.raises(loader.OutputMismatchError, match=f"{target} holds .* bytes, but the manifest lists"):
        loader.make_dataset(str(copy), "train", 4)
    assert set(verification.verify(str(copy))) == {first}


@pytest.mark.parametrize("listed_change", [-1, 1])
def test_a_shard_holding_more_or_fewer_records_than_listed_raises_naming_it(raw_output, tmp_path, listed_change):
    """The size agrees but the count does not (as with a same-size replacement)."""
    copy, (first, _) = _copy_of(raw_output, tmp_path)
    listed = json.loads((copy / "manifest.json").read_text())
    listed["files"][first]["num_examples"] += listed_change
    listed["files"][f"{first}.idx"]["num_records"] += listed_change
    listed["splits"]["train"]["num_examples"] += listed_change  # (a manifest that agrees with itself)
    listed["num_examples"] += listed_change
    (copy / "manifest.json").write_text(json.dumps(listed))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"{copy / first}.*does not hold the number of records its manifest lists"):
        _batches(loader.make_dataset(str(copy), "train", 4, shuffle=False))


def test_a_record_corrupt_in_place_is_named_by_the_cli_and_by_verify(raw_output, tmp_path, capsys):
    copy, (first, _) = _copy_of(raw_output, tmp_path)
    data = bytearray((copy / first).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the checksums can tell
    (copy / first).write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=f"{first}: crc32c [0-9a-f]{{8}}, the manifest lists"):
        loader.main(["--data", str(copy), "--batch_size", "4", "--steps", "50", "--no_shuffle"])
    assert verify.main([str(copy)]) == 1
    assert f"FAIL {copy}/{first}: crc32c" in capsys.readouterr().out
    assert verify.main([str(raw_output[0])]) == 0


def test_a_transform_file_that_differs_from_its_manifest_entry_is_never_applied(raw_output, tmp_path):
    """Another output's statistics, the same size: the graph would normalize with the wrong mean."""
    copy, _ = _copy_of(raw_output, tmp_path)
    statistics = copy / "transform_fn" / "assets" / "statistics"
    data = bytearray(statistics.read_bytes())
    data[len(data) // 2] ^= 0x01
    statistics.write_bytes(bytes(data))
    for load in (lambda: loader.make_dataset(str(copy), "train", 4),
                 lambda: loader.make_dataset(str(copy), "train", 4, normalize_on_device=True),
                 lambda: loader.normalization_layer(str(copy))):
        with pytest.raises(loader.OutputMismatchError, match="transform_fn/assets/statistics: crc32c"):
            load()
    with pytest.raises(SystemExit) as exited:  # the command: one message, no traceback
        cli.main(["--data", str(copy), "--split", "train", "--steps", "1"])
    assert "transform_fn/assets/statistics: crc32c" in str(exited.value.code)
    assert str(exited.value.code).startswith(f"error: --data {str(copy)!r}: ")


def _statistics_tripled(statistics):
    """The asset's channel sums (its lines 2 to 4) times 3: the graph would normalize with 3x the mean."""
    lines = statistics.read_text().split("\n")
    lines[1:4] = [str(int(line) * 3) for line in lines[1:4]]
    statistics.write_text("\n".join(lines))


@pytest.mark.parametrize("linked", [False, True])
def test_a_transform_file_the_manifest_does_not_list_is_never_applied(raw_output, tmp_path, linked):
    """The statistics asset dropped from the manifest's files, then changed: every file in the
    graph's folders must be listed. (``linked``: transform_fn a link to a folder elsewhere, which the
    job never writes: named, its files never walked.)"""
    copy, _ = _copy_of(raw_output, tmp_path)
    _edited_manifest(copy, lambda m: m["files"].pop("transform_fn/assets/statistics"))
    _statistics_tripled(copy / "transform_fn" / "assets" / "statistics")
    named = "transform_fn/assets/statistics: not listed in the manifest"
    if linked:
        shutil.move(copy / "transform_fn", tmp_path / "elsewhere")
        (copy / "transform_fn").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        named = "transform_fn: a link to a folder, which the job never writes"
    for load in (lambda: loader.make_dataset(str(copy), "train", 4),
                 lambda: loader.make_dataset(str(copy), "train", 4, normalize_on_device=True),
                 lambda: loader.normalization_layer(str(copy))):
        with pytest.raises(loader.OutputMismatchError, match=f"{copy}/{named}"):
            load()
    with pytest.raises(SystemExit) as exited:
        cli.main(["--data", str(copy), "--split", "train", "--steps", "1"])
    assert str(exited.value.code).startswith(f"error: --data {str(copy)!r}: {copy}/{named}")
    problems = verification.verify(str(copy))
    assert (problems == {"transform_fn": "a link to a folder, which the job never writes; not followed"} if linked
            else problems == {"transform_fn/assets/statistics": "not listed in the manifest"})


def test_verify_names_a_job_folder_that_is_a_link_rather_than_pass_over_its_files(raw_output, tmp_path, capsys):
    """lineage/ a link to a copy that holds one file more: not followed (it could loop back), and named."""
    copy, _ = _copy_of(raw_output, tmp_path)
    shutil.move(copy / "lineage", tmp_path / "lineage")
    (tmp_path / "lineage" / "train-00002-of-00003.jsonl").write_text("{}\n")
    (copy / "lineage").symlink_to(tmp_path / "lineage", target_is_directory=True)
    assert verification.verify(str(copy)) == {"lineage": "a link to a folder, which the job never writes; not followed"}
    assert verify.main([str(copy)]) == 1
    assert f"FAIL {copy}/lineage: a link to a folder" in capsys.readouterr().out


def test_a_listed_empty_shard_that_is_not_a_regular_file_is_refused_not_opened(tmp_path):
    """A FIFO has the size of an empty shard (0 bytes): opening it would wait for ever."""
    os.mkfifo(tmp_path / "val-00000-of-00001.tfrecord")
    manifest = {"files": {"val-00000-of-00001.tfrecord": {"bytes": 0, "num_examples": 0, "crc32c": "00000000"}}}
    with pytest.raises(loader.OutputMismatchError, match="val-00000-of-00001.tfrecord is not a regular file"):
        dataset_module.check_files(str(tmp_path), manifest, ["val-00000-of-00001.tfrecord"])


def test_a_dataset_made_from_a_relative_path_reads_the_same_after_a_chdir(raw_output, tmp_path, monkeypatch):
    out, manifest = raw_output
    monkeypatch.chdir(out.parent)
    dataset = loader.make_dataset(out.name, "train", 4, shuffle=False)
    monkeypatch.chdir(tmp_path)
    assert len(_examples(dataset)) == manifest["splits"]["train"]["num_examples"]


def _edited_manifest(copy, edit):
    listed = json.loads((copy / "manifest.json").read_text())
    edit(listed)
    (copy / "manifest.json").write_text(json.dumps(listed))


@pytest.mark.parametrize("edit, named", [
    (lambda m: m["splits"]["train"]["files"].extend(m["splits"]["test"]["files"]), "not a shard of split 'train'"),
    (lambda m: m["splits"]["train"]["files"].append(m["splits"]["train"]["files"][0]), "twice"),
    (lambda m: m["splits"]["train"]["files"].append("../elsewhere/train-00000-of-00001.tfrecord"),
     "not a shard of split 'train'"),
    (lambda m: m["splits"]["train"].update(num_examples=m["splits"]["train"]["num_examples"] + 1), "num_examples"),
    (lambda m: m.pop("files"), "lists no files"),
    (lambda m: m["files"].update({"val-00009-of-00010.tfrecord": m["files"][m["splits"]["train"]["files"][0]]}),
     "lists the shard 'val-00009-of-00010.tfrecord', which no split lists"),
    (lambda m: (m.pop("files"), m.update(format_version=1)),
     "it holds 'run_id', which no manifest of format_version 1"),
    # what the loader decodes the records by, against the flags they were made with
    (lambda m: m["image"].update(height=m["image"]["width"] * 2), "and the flags say --image_size"),
    (lambda m: m["image"].update(format="jpeg"), "image.format is 'jpeg', and the flags say --image_format 'raw'"),
    (lambda m: m["image"].update(mask_ignore_value=1), "image.mask_ignore_value is there only for padded records"),
    (lambda m: m.update(statistics=None), "statistics are null, and it lists the transform graph"),
    # what the records are parsed by
    (lambda m: m["features"].pop("image/segmentation/class/encoded"),
     "features lacks 'image/segmentation/class/encoded', which the job writes in every record"),
    (lambda m: m["features"]["image/encoded"].update(dtype="float"),
     "features.image/encoded is of dtype 'float', and the job writes it as 'string'"),
    (lambda m: m["features"]["image/class/text"].update(dtype="int64"),
     "features.image/class/text is of dtype 'int64', and the job writes it as 'string'"),
    (lambda m: m.pop("features"), "'features' is not an object"),
    (lambda m: m["features"].update({"image/depth": {"dtype": "int64"}}),
     "features has 'image/depth', which the job writes in no record"),
    (lambda m: m["image"].update(mask_format="png"),
     "image.mask_format is 'png', and the job stores the masks of --image_format 'raw' records as 'raw'"),
])
def test_a_manifest_that_contradicts_itself_is_refused_by_the_loader_and_verify(raw_output, tmp_path, edit, named):
    copy, _ = _copy_of(raw_output, tmp_path)
    _edited_manifest(copy, edit)
    with pytest.raises((loader.OutputMismatchError, ValueError), match=named):
        loader.make_dataset(str(copy), "train", 4)
    try:
        problems = verification.verify(str(copy))
    except ValueError as error:  # (a manifest without its list of files cannot be verified)
        assert "lists no" in str(error)
    else:
        assert any(named in problem for problem in problems.values())


@pytest.mark.parametrize("edit, named", [
    (lambda m: m.pop("features"), "'features' is not an object"),
    (lambda m: m["features"]["image/encoded"].update(dtype="float"), "features.image/encoded is of dtype 'float'"),
    (lambda m: m["image"].update(mask_format="png"), "image.mask_format is 'png'"),
])
def test_cli_refuses_a_manifest_whose_features_or_mask_format_were_edited_naming_the_field(raw_output, tmp_path,
                                                                                        edit, named):
    """One line naming the manifest and the field, not a KeyError or TensorFlow's traceback."""
    copy, _ = _copy_of(raw_output, tmp_path)
    _edited_manifest(copy, edit)
    for on_device in ([], ["--normalize_on_device"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--data", str(copy), "--steps", "2", "--batch_size", "4", *on_device])
        assert str(exited.value.code).startswith(f"error: --data {str(copy)!r}: {copy}/manifest.json: {named}")


def test_a_padded_output_s_mask_ignore_value_edited_is_refused_naming_it(pets_dir, tmp_path):
    """The job gives the padding of --resize pad one value: another would turn a class into the
    ignore id (and the padding into a class) without a word."""
    out = tmp_path / "pad"
    run_job(pets_dir, out, "--resize", "pad", "--no_statistics", "--image_format", "raw")
    _edited_manifest(out, lambda m: m["image"].update(mask_ignore_value=2))
    named = "image.mask_ignore_value is 2, and the job gives the padding of --resize pad 255"
    with pytest.raises(loader.OutputMismatchError, match=named):
        loader.make_dataset(str(out), "train", 4)
    assert any(named in problem for problem in verification.verify(str(out)).values())
    _edited_manifest(out, lambda m: m["image"].update(mask_ignore_value=255))
    masks = np.concatenate([mask for _, mask in _batches(loader.make_dataset(str(out), "train", 4, shuffle=False))])
    assert -1 in masks and 255 not in masks  # (the padding: the ignore id)


def test_a_manifest_of_the_first_format_reads_as_before(raw_output, tmp_path):
    """Format 1 listed no files: none of the checks of what it says of itself apply to it."""
    copy, _ = _copy_of(raw_output, tmp_path)
    _, manifest = raw_output

    def first_format(listed):  # (what format 1 had not: the list of files, the run's id, the lineage index,
        for key in ("files", "run_id", "lineage", "statistics_absent"):  # why statistics are absent,
            del listed[key]
        for key in ("use_cache", "cache_dir", "resize"):  # the flags of format 3's and 4's jobs on)
            del listed["flags"][key]
        del listed["image"]["resize"]
        listed["format_version"] = 1

    _edited_manifest(copy, first_format)
    examples = _examples(loader.make_dataset(str(copy), "train", 4, shuffle=False))
    assert len(examples) == manifest["splits"]["train"]["num_examples"]


def _drop_one_lineage_file(listed):
    dropped = listed["lineage"]["files"].pop()
    del listed["files"][dropped]


def _list_outside(listed):
    rejected = listed["files"]["rejected/rejected-00000-of-00001.jsonl"]
    listed["files"]["../../data/annotations/test.txt"] = dict(rejected)


def _lower_the_format(listed):
    listed["format_version"] = 3


def test_a_first_record_whose_length_is_corrupt_is_refused_never_read(raw_output, tmp_path):
    """Flipped bits in a length ask for terabytes (a read that size kills the process): the
    length's checksum is checked first, and the file named."""
    copy, (first, _) = _copy_of(raw_output, tmp_path)
    data = bytearray((copy / first).read_bytes())
    data[5] ^= 0x80  # (the length's bit 47: 128 TiB more)
    (copy / first).write_bytes(bytes(data))
    with pytest.raises(loader.OutputMismatchError, match=f"{first}: its first record's length does not match"):
        loader.make_dataset(str(copy), "train", 4, shuffle=False)
    huge = tmp_path / "huge.tfrecord"
    huge.write_bytes(struct.pack("<Q", 1 << 40) + bytes(4) + b"x" * 100)
    with pytest.raises(ValueError, match="length does not match its checksum"):
        listed_files.first_record(str(huge), huge.stat().st_size)


def test_an_empty_first_shard_of_a_manifest_without_counts_is_passed_over(raw_output, tmp_path):
    out, manifest = raw_output
    shard = next(name for name in manifest["splits"]["train"]["files"] if manifest["files"][name]["num_examples"])
    record = listed_files.first_record(str(out / shard), (out / shard).stat().st_size)
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    _rewrite(tmp_path / "full.tfrecord", [record])
    files = [str(tmp_path / "empty.tfrecord"), str(tmp_path / "full.tfrecord")]
    dataset_module.check_first_record(files, [None, None], manifest["image"])  # (a format-1 output's)
    with pytest.raises(loader.OutputMismatchError, match="full.tfrecord: its first record is 40x32"):
        dataset_module.check_first_record(files, [None, None], {**manifest["image"], "height": 20, "width": 64})
    with pytest.raises(loader.OutputMismatchError, match="full.tfrecord: its first record's mask is of format b'raw', "
                                                         "the manifest's image.mask_format says 'png'"):
        dataset_module.check_first_record(files, [None, None], {**manifest["image"], "mask_format": "png"})


def test_the_loader_refuses_records_of_another_size_than_a_manifest_edited_throughout_says(raw_output, tmp_path):
    """Raw pixels of 40x32 would reshape to 20x64 without a word: the first record is checked."""
    copy, _ = _copy_of(raw_output, tmp_path)
    _edited_manifest(copy, lambda m: (m["image"].update(height=20, width=64), m["flags"].update(image_size=[20, 64])))
    for on_device in (True, False):
        with pytest.raises(loader.OutputMismatchError,
                           match="its first record is 40x32, the manifest's image says 20x64"):
            loader.make_dataset(str(copy), "train", 4, normalize_on_device=on_device)


@pytest.mark.parametrize("edit, named", [
    # counts that do not add up
    (lambda m: m.update(num_inputs=m["num_inputs"] + 993), "num_inputs is 993 more than num_written + num_rejected"),
    (lambda m: m.update(num_rejected=m["num_rejected"] + 3, num_inputs=m["num_inputs"] + 3),
     "num_rejected 3 more than the rejected list's"),
    (lambda m: m.update(num_written=m["num_written"] - 1, num_rejected=m["num_rejected"] + 1),
     "num_written is 1 less than the splits' num_source_examples"),
    (lambda m: m.update(num_examples=m["num_examples"] + 1), "num_examples is 1 more than the splits'"),
    # the lineage index cut down, or its format's checks switched off
    (_drop_one_lineage_file, "the lineage index lists 5 files, not one per shard (6)"),
    (lambda m: m.pop("lineage"), "format_version 4 has a lineage index, and this manifest has none"),
    (_lower_the_format, "it holds 'lineage', which no manifest of format_version 3 has (from 4 on)"),
    # a file outside the output
    (_list_outside, "lists '../../data/annotations/test.txt', which is not a file of an output"),
    # shapes a hand edit makes
    (lambda m: m.update(files=[]), "'files' is not an object"),
    (lambda m: m["files"][m["rejected"]["file"]].pop("bytes"), "its 'bytes' is not a count"),
    (lambda m: m["files"][m["rejected"]["file"]].update(bytes=str(m["files"][m["rejected"]["file"]]["bytes"])),
     "its 'bytes' is not a count"),
    (lambda m: m.update(splits="x"), "'splits' is not an object"),
    (lambda m: m.update(format_version=None), "'format_version' is not a count"),
    (lambda m: m["splits"]["train"].update(num_examples=str(m["splits"]["train"]["num_examples"])),
     "splits.train's 'num_examples' is not a count"),
    # statistics against the graph made from them and the flags
    (lambda m: m.update(files={name: entry for name, entry in m["files"].items() if not name.startswith("transform")}),
     "it has statistics, and lists no transform graph made from them"),
    (lambda m: m["flags"].update(statistics=False), "it has statistics, and the flags say --no_statistics"),
    # what the records are, edited throughout the manifest (raw pixels of one size read as another's)
    (lambda m: (m["image"].update(height=m["image"]["height"] // 2, width=m["image"]["width"] * 2),
                m["flags"].update(image_size=[m["image"]["height"], m["image"]["width"]])),
     "its first record is 40x32, the manifest's image says 20x64"),
])
def test_verify_finds_a_manifest_edited_by_hand_to_say_what_is_not_so(raw_output, tmp_path, capsys, edit, named):
    """Each edit leaves every listed file as listed: only the manifest's own numbers, names and
    shape give it away. No traceback: verify says what is wrong (exit status 1)."""
    copy, _ = _copy_of(raw_output, tmp_path)
    _edited_manifest(copy, edit)
    problems = verification.verify(str(copy))
    assert any(named in problem for problem in problems.values()), problems
    assert verify.main([str(copy)]) == 1
    assert named in capsys.readouterr().out


def test_verify_passes_over_the_name_of_a_run_folder_that_went_while_it_walked(raw_output, tmp_path):
    copy, _ = _copy_of(raw_output, tmp_path)
    (copy / ".incomplete").write_bytes(b"")  # what a walk sees of a folder removed under it
    assert verification.verify(str(copy)) == {}


def test_a_cache_file_holds_one_split_of_one_version(raw_output, tmp_path):
    out, manifest = raw_output
    cache = str(tmp_path / "records")
    counts = {split: sum(len(images) for images, _ in _batches(
        loader.make_dataset(str(out), split, 4, shuffle=False, cache=cache))) for split in ("train", "test", "train")}
    assert counts == {split: manifest["splits"][split]["num_examples"] for split in ("train", "test")}


def test_an_output_replaced_while_it_is_read_raises_instead_of_mixing_versions(pets_dir, raw_output, tmp_path):
    copy, _ = _copy_of(raw_output, tmp_path)
    dataset = loader.make_dataset(str(copy), "train", 4, shuffle=False)
    assert _batches(dataset)  # the version it was made for
    run_job(pets_dir, copy, "--image_format", "raw", "--augment_copies", "2", "--mask_values", "1,2,3",
            "--resize", "crop", "--overwrite")
    with pytest.raises(tf.errors.InvalidArgumentError, match="was replaced while it was read"):
        _batches(dataset)


@pytest.mark.parametrize("change", ["edited", "removed", "folder swapped"])
def test_a_repeating_dataset_notices_a_replaced_output_at_the_next_epoch(raw_output, tmp_path, change):
    """One iterator over ``repeat=True`` opens each file again every epoch: each time, of the
    version the dataset was made for (TensorFlow would read the manifest once, as its iterator
    starts, were the read's path a constant)."""
    copy, _ = _copy_of(raw_output, tmp_path)
    _, manifest = raw_output
    batches_per_epoch = -(-manifest["splits"]["train"]["num_examples"] // 2)
    iterator = iter(loader.make_dataset(str(copy), "train", 2, shuffle=False, repeat=True))
    next(iterator)
    if change == "edited":  # (a version of the same size and counts would do the same)
        (copy / "manifest.json").write_bytes((copy / "manifest.json").read_bytes() + b" ")
    elif change == "removed":
        (copy / "manifest.json").unlink()
    else:
        other, _ = _copy_of(raw_output, tmp_path / "other")
        (other / "manifest.json").write_bytes((other / "manifest.json").read_bytes() + b" ")
        copy.rename(tmp_path / "old")
        other.rename(copy)
    with pytest.raises((tf.errors.InvalidArgumentError, tf.errors.NotFoundError),
                       match="was replaced while it was read" if change != "removed" else "manifest.json"):
        for _ in range(3 * batches_per_epoch):
            next(iterator)


def test_verify_names_what_is_not_a_file_and_never_follows_a_link_back_into_the_output(raw_output, tmp_path):
    copy, (first, second) = _copy_of(raw_output, tmp_path)
    (copy / first).unlink()
    os.mkfifo(copy / first)  # opening it would block for ever
    (copy / second).unlink()
    (copy / second).mkdir()
    (copy / "lineage" / "loop").symlink_to(copy, target_is_directory=True)
    assert verification.verify(str(copy)) == {first: "not a regular file; not opened", second: "a folder, not a file",
                                        "lineage/loop": "a link to a folder, which the job never writes; not followed"}


def test_a_file_uri_output_s_fifo_is_named_not_opened_by_verify_and_the_loader(raw_output, tmp_path):
    """``file://OUT`` is as local as ``OUT``: a FIFO in a shard's place is refused by its type,
    where a read of it would wait for ever. Each command in a process an alarm stops after 20 s."""
    copy, (first, _) = _copy_of(raw_output, tmp_path)
    (copy / first).unlink()
    os.mkfifo(copy / first)
    for command, status, said in [(["verify", f"file://{copy}"], 1, "not a regular file; not opened"),
                                  (["load", "--data", f"file://{copy}", "--split", "train", "--steps", "1"], 1,
                                   "is not a regular file")]:
        done = hang_guarded(command)
        assert "HUNG" not in done.stdout and done.returncode == status, (command, done.stdout, done.stderr[-2000:])
        assert said in done.stdout + done.stderr, (command, done.stdout, done.stderr[-2000:])


def test_the_loader_and_verify_need_tensorflow_only():
    """A trainer imports the loader without Apache Beam, Beam's Dask runner or dask."""
    code = ("import sys, beam_etl.loader.dataset, beam_etl.loader.verification; "
            "print(sorted(m for m in ('apache_beam', 'dask', 'distributed') if m in sys.modules))")
    printed = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    assert printed.strip().splitlines()[-1] == "[]"


def test_cli_reports_progress_in_whole_lines(raw_output, monkeypatch):
    """Batches and training steps are reported the way the job reports images: whole lines in
    a log (here every update), a live line on a terminal."""
    import functools
    import io

    from beam_etl.progress import ProgressLine

    out, _ = raw_output
    log = io.StringIO()
    monkeypatch.setattr(load_run, "ProgressLine", functools.partial(ProgressLine, stream=log, every_s=0.0))
    loader.main(["--data", str(out), "--batch_size", "4", "--steps", "3"])
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == [
        f"{step} of 3 batches done" for step in (1, 2, 3)]
    log.truncate(0)
    log.seek(0)
    loader.main(["--data", str(out), "--batch_size", "4", "--train_steps", "2"])
    assert [line.split(" (")[0] for line in log.getvalue().splitlines()] == [
        f"{step} of 4 training steps done" for step in (1, 2, 3, 4)]
    assert "\r" not in log.getvalue()


def test_a_manifest_that_is_not_a_regular_file_is_refused_by_every_reader_and_the_job(raw_output, pets_dir,
                                                                                      tmp_path):
    """A FIFO where manifest.json should be: a read of it would wait for ever for a writer.
    Each command runs in a process that an alarm stops after 20 s, as a hang."""
    copy, _ = _copy_of(raw_output, tmp_path)
    (copy / "manifest.json").unlink()
    os.mkfifo(copy / "manifest.json")
    commands = [(["verify", str(copy)], 2), (["load", "--data", str(copy), "--split", "train", "--steps", "1"], 1),
                (["diff", str(raw_output[0]), str(copy)], 2), (["report", str(copy)], 2),
                (["prune-cache", str(copy)], 2),
                (["preprocess", "--oxford_pets", str(pets_dir), "--output", str(copy), "--image_size", "24",
                  "--overwrite"], 2)]
    for command, status in commands:
        done = hang_guarded(command)
        assert "HUNG" not in done.stdout and done.returncode == status, (command, done.stdout, done.stderr[-2000:])
        assert f"{copy}/manifest.json is not a regular file, as a manifest is" in done.stderr, (command, done.stderr)
    assert stat.S_ISFIFO(os.lstat(copy / "manifest.json").st_mode) and not (copy / ".incomplete").exists()
