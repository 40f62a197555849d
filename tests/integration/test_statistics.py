"""tf.Transform statistics and transform graph: compared with numpy on the same images."""

from __future__ import annotations

import pathlib
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from beam_etl import loader, schema
from beam_etl.image.pixel_statistics import Totals
from beam_etl.loader import transform_graph
from tests.support import tft_reference
from tests.support.jobs import run_job
from tests.support.tfrecords import read_examples


def _train_originals(out, manifest):
    examples = read_examples([out / name for name in manifest["splits"]["train"]["files"]])
    return [e for e in examples if "#aug" not in e["key"]]


def _numpy_statistics(examples, class_values):
    pixels = np.stack([e["image"] for e in examples]).reshape(-1, 3).astype(np.float64)
    masks = np.stack([e["mask"] for e in examples])
    return {
        "pixel_mean": pixels.mean(axis=0),
        "pixel_std": pixels.std(axis=0),
        "class_pixel_frequency": [np.mean(masks == v) for v in class_values],
        "class_image_fraction": [np.mean([(m == v).any() for m in masks]) for v in class_values],
    }


@pytest.mark.slow
def test_statistics_match_numpy_on_the_training_originals(raw_output):
    out, manifest = raw_output
    stats = manifest["statistics"]
    originals = _train_originals(out, manifest)
    assert stats["num_images"] == len(originals) == manifest["splits"]["train"]["num_source_examples"]
    assert stats["num_pixels"] == len(originals) * 40 * 32
    assert stats["class_values"] == [1, 2, 3]
    expected = _numpy_statistics(originals, [1, 2, 3])
    for key, value in expected.items():
        np.testing.assert_allclose(stats[key], value, rtol=1e-4, err_msg=key)
    # Augmented copies are left out: including them changes the figures.
    everything = read_examples([out / name for name in manifest["splits"]["train"]["files"]])
    assert len(everything) > len(originals)
    assert not np.allclose(_numpy_statistics(everything, [1, 2, 3])["pixel_mean"], stats["pixel_mean"], rtol=1e-4)
    assert sorted(stats["class_names"]) == sorted({e["label_name"] for e in originals})
    assert stats["other_value_pixels"] == 0


@pytest.mark.slow
def test_transform_graph_on_known_inputs(raw_output):
    out, manifest = raw_output
    stats = manifest["statistics"]
    transform_output = tft.TFTransformOutput(str(out))
    image = np.zeros((2, 40, 32, 3), np.uint8)
    image[0, :, :] = [10, 120, 250]
    image[1, 5, 7] = [255, 0, 1]
    mask = np.full((2, 40, 32), 2, np.uint8)
    mask[0, 0] = 1
    mask[0, 1] = 3
    mask[1, 2] = 7  # not a class: -1
    names = [stats["class_names"][3].encode(), b"no such breed"]
    outputs = transform_output.transform_raw_features({
        schema.IMAGE_ENCODED: tf.constant([image[0].tobytes(), image[1].tobytes()]),
        schema.MASK_ENCODED: tf.constant([mask[0].tobytes(), mask[1].tobytes()]),
        schema.CLASS_TEXT: tf.constant(names),
    }, drop_unused_features=True)
    mean, std = np.array(stats["pixel_mean"]), np.array(stats["pixel_std"])
    np.testing.assert_allclose(outputs["image"].numpy(), (image - mean) / std, rtol=1e-5, atol=1e-5)
    assert outputs["image"].dtype == tf.float32
    expected_mask = np.array([-1, 0, 1, 2] + [-1] * 252)[mask]
    np.testing.assert_array_equal(outputs["mask"].numpy(), expected_mask)
    assert outputs["label"].numpy().tolist() == [3, -1]
    assert set(transform_output.transformed_feature_spec()) >= {"image", "mask", "label"}


@pytest.mark.slow
def test_jpeg_statistics_describe_the_decoded_records_and_classes_come_from_the_data(pets_dir, tmp_path):
    manifest = run_job(pets_dir, tmp_path, "--image_format", "jpeg")
    stats = manifest["statistics"]
    originals = _train_originals(tmp_path, manifest)
    values = sorted(set(np.unique(np.stack([e["mask"] for e in originals])).tolist()))
    assert stats["class_values"] == values == [1, 2, 3]
    for key, value in _numpy_statistics(originals, values).items():
        np.testing.assert_allclose(stats[key], value, rtol=1e-4, err_msg=key)


def _records(out, manifest, split):
    paths = [str(out / name) for name in manifest["splits"][split]["files"]]
    return [record.numpy() for record in tf.data.TFRecordDataset(paths)]


def _assert_same_graph_as_tf_transforms_full_pass(out, manifest, mask_values, tmp_path):
    """tf.Transform's own analysis of the written training originals gives a graph with the
    same outputs, bit for bit, on every record of every split, and the same vocabulary file."""
    originals = [r for r in _records(out, manifest, "train")
                 if b"#aug" not in tf.train.Example.FromString(r).features.feature[schema.IMAGE_SOURCE_ID].bytes_list.value[0]]
    assert len(originals) == manifest["statistics"]["num_images"] > 0
    reference = tmp_path / "reference"
    tft_reference.analyze_records(originals, manifest["image"], mask_values, str(reference), str(tmp_path / "tft"))
    ours, theirs = tft.TFTransformOutput(str(out)), tft.TFTransformOutput(str(reference))
    assert ours.transformed_feature_spec() == theirs.transformed_feature_spec()
    for name in ("schema.pbtxt", "asset_map"):  # the label's domain: the vocabulary's size
        assert (out / "transformed_metadata" / name).read_bytes() == \
            (reference / "transformed_metadata" / name).read_bytes()
    with open(ours.vocabulary_file_by_name(transform_graph.CLASS_NAMES), "rb") as mine, \
            open(theirs.vocabulary_file_by_name(transform_graph.CLASS_NAMES), "rb") as reference_file:
        assert mine.read() == reference_file.read()
    records = [r for split in manifest["splits"] for r in _records(out, manifest, split)]
    features = tf.io.parse_example(tf.constant(records), ours.raw_feature_spec())
    got = ours.transform_raw_features(features, drop_unused_features=True)
    expected = theirs.transform_raw_features(features, drop_unused_features=True)
    assert set(got) == set(expected) and len(got) > 3
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy(), err_msg=key)


@pytest.mark.slow
def test_the_graph_is_tf_transforms_own_on_jpeg_records(pets_dir, tmp_path):
    out = tmp_path / "out"
    manifest = run_job(pets_dir, out, "--image_format", "jpeg")
    _assert_same_graph_as_tf_transforms_full_pass(out, manifest, None, tmp_path)


@pytest.mark.slow
def test_the_graph_is_tf_transforms_own_with_mask_values_and_copies(raw_output, tmp_path):
    out, manifest = raw_output
    _assert_same_graph_as_tf_transforms_full_pass(out, manifest, (1, 2, 3), tmp_path)


def test_the_empty_vocabulary_token_is_tf_transforms():
    from tensorflow_transform import analyzers  # pylint: disable=import-outside-toplevel

    _, token = analyzers.get_empy_vocabulary_dummy_value(tf.string)
    assert token.decode() == transform_graph.EMPTY_VOCABULARY_TOKEN


@pytest.mark.slow
def test_no_statistics_writes_no_transform(pets_dir, tmp_path):
    manifest = run_job(pets_dir, tmp_path, "--no_statistics")
    assert manifest["statistics"] is None
    assert not (tmp_path / "transform_fn").exists()
    # The loader falls back to pixels scaled to [0, 1] and masks as stored.
    images, masks = zip(*loader.make_dataset(str(tmp_path), "train", 64, shuffle=False,
                                                   deterministic=True))
    images, masks = np.concatenate(images), np.concatenate(masks)
    assert len(images) == manifest["splits"]["train"]["num_examples"] > 0
    assert 0.0 <= images.min() < images.max() <= 1.0
    assert set(np.unique(masks).tolist()) == {1, 2, 3}
    # On device: the stored uint8 pixels and mask values, and a layer that scales by 1/255.
    pixels, values = zip(*loader.make_dataset(str(tmp_path), "train", 64, shuffle=False,
                                                    deterministic=True, normalize_on_device=True))
    pixels, values = np.concatenate(pixels), np.concatenate(values)
    assert pixels.dtype == np.uint8 and values.dtype == np.uint8
    np.testing.assert_array_equal(values, masks)
    layer = loader.normalization_layer(str(tmp_path))
    np.testing.assert_allclose(np.asarray(layer(pixels)), images, rtol=0, atol=1e-6)


def test_summarize_computes_from_exact_sums():
    raw = {
        "num_images": np.int64(2),
        "channel_sum": np.array([2 * 4 * 10, 0, 2 * 4 * 255]),
        "channel_sum_squares": np.array([2 * 4 * 100, 0, 2 * 4 * 255 ** 2]),
        "value_pixels": np.bincount([0] * 6 + [5, 5], minlength=256),
        "value_images": np.bincount([0, 0, 5], minlength=256),
        "class_ids": np.array([0, -1, -1, -1, -1, 1] + [-1] * 250),
    }
    image_info = {"height": 2, "width": 2, "channels": 3}
    stats = transform_graph.summarize(raw, image_info, ["cat"])
    assert stats["pixel_mean"] == [10.0, 0.0, 255.0]
    assert stats["pixel_std"] == [0.0, 0.0, 0.0]
    assert stats["class_values"] == [0, 5]
    assert stats["class_pixel_frequency"] == [0.75, 0.25]
    assert stats["class_image_fraction"] == [1.0, 0.5]
    assert stats["num_pixels"] == 8 and stats["class_names"] == ["cat"]


@pytest.mark.parametrize("dtype", [tf.int64, tf.int32, tf.int8])
@pytest.mark.parametrize("values", [(1, 2, 3), (0, 2, 255), (0,), ()])
def test_class_ids_of_mask_values_contiguous_or_not(values, dtype):
    is_class = np.isin(np.arange(256), values)
    class_ids = np.where(is_class, np.cumsum(is_class) - 1, -1)
    masks = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    ids = transform_graph.class_ids_of(tf.constant(masks), tf.constant(class_ids), dtype)
    assert ids.dtype == dtype
    np.testing.assert_array_equal(ids.numpy(), class_ids[masks])


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 3, 5)])  # four pixels per word; one by one
@pytest.mark.parametrize("dtype", [tf.int64, tf.int32, tf.int8])
@pytest.mark.parametrize("values", [(1, 2, 3), (0, 1), (0, 2, 255), (7,), (126, 127, 128, 129), (254, 255)])
def test_class_ids_of_masks_holding_only_classes(values, dtype, shape):
    is_class = np.isin(np.arange(256), values)
    class_ids = np.where(is_class, np.cumsum(is_class) - 1, -1)
    size = int(np.prod(shape))
    masks = np.array(values, dtype=np.uint8)[np.random.default_rng(0).integers(len(values), size=size)].reshape(shape)
    ids = transform_graph.class_ids_of(tf.constant(masks), tf.constant(class_ids), dtype, only_classes=True)
    assert ids.dtype == dtype and ids.shape == shape
    np.testing.assert_array_equal(ids.numpy(), class_ids[masks])
    np.testing.assert_array_equal(ids.numpy(), transform_graph.class_ids_of(tf.constant(masks), tf.constant(class_ids), dtype).numpy())
    # in a tf.function over batches of unknown size, as the loader calls it
    batched = tf.function(lambda m: transform_graph.class_ids_of(m, tf.constant(class_ids), dtype, only_classes=True),
                          input_signature=[tf.TensorSpec([None, *shape[1:]], tf.uint8)])
    np.testing.assert_array_equal(batched(tf.constant(masks)).numpy(), class_ids[masks])


@pytest.mark.parametrize("mask_values, split, expected", [
    ([1, 2, 3], "val", True),  # --mask_values: validation rejected every other value
    (None, "train", True),  # the label set is every value the statistics' split holds
    (None, "val", False),  # another split may hold a value the statistics never saw
])
def test_masks_hold_only_classes_where_the_job_guarantees_it(mask_values, split, expected):
    manifest = {"flags": {"mask_values": mask_values}, "statistics": {"split": "train"}}
    assert transform_graph.masks_hold_only_classes(manifest, split) is expected
    assert transform_graph.masks_hold_only_classes({"flags": {"mask_values": mask_values}, "statistics": None}, split) is False


IMAGE_INFO = {"height": 8, "width": 12, "channels": 3, "format": "png", "mask_format": "png"}


@pytest.mark.slow
def test_a_template_is_written_once_and_a_damaged_one_again(tmp_path, monkeypatch):
    from beam_etl.beam import transform_template  # pylint: disable=import-outside-toplevel

    first = transform_template.template(IMAGE_INFO, None, root=str(tmp_path))
    assert transform_template._is_intact(first)  # pylint: disable=protected-access
    written = []
    real_write = transform_template.write_template
    monkeypatch.setattr(transform_template, "write_template",
                        lambda *args: written.append(args) or real_write(*args))
    assert transform_template.template(IMAGE_INFO, None, root=str(tmp_path)) == first and not written
    # another record format, or another label set, is another template
    other = transform_template.template({**IMAGE_INFO, "height": 9}, (1, 2), root=str(tmp_path))
    assert other != first and len(written) == 1
    model = pathlib.Path(first) / "transform_fn" / "saved_model.pb"
    model.write_bytes(model.read_bytes()[:-1])
    assert transform_template.template(IMAGE_INFO, None, root=str(tmp_path)) == first and len(written) == 2
    assert transform_template._is_intact(first)  # pylint: disable=protected-access
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".partial", ".damaged"))]


@pytest.mark.slow
def test_a_template_is_built_on_the_fn_api_runner_and_leaves_nothing_in_the_temporary_folder(tmp_path, monkeypatch):
    # Beam 2.77's DirectRunner first tries its PrismRunner, which it downloads from GitHub: the
    # template is built on the runner the job is tested on, with no download and nothing left over.

    from apache_beam.runners.portability import prism_runner  # pylint: disable=import-outside-toplevel

    from beam_etl.beam import transform_template  # pylint: disable=import-outside-toplevel

    tried = []
    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", lambda *args, **kwargs: tried.append(args) or 1 / 0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    folder = transform_template.template({**IMAGE_INFO, "width": 13}, None, root=str(tmp_path / "cache"))
    assert transform_template._is_intact(folder) and not tried  # pylint: disable=protected-access
    # (TensorFlow's autograph writes its generated code there, and removes it as the process exits)
    assert [path.name for path in scratch.iterdir() if not path.name.startswith("__autograph_generated_file")] == []


@pytest.mark.slow
def test_a_cache_that_cannot_be_written_is_no_error_and_leaves_no_template_behind(tmp_path, monkeypatch):
    from beam_etl.beam import transform_template  # pylint: disable=import-outside-toplevel

    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    staged = tmp_path / "staged"
    scratch = tmp_path / "temporary"  # the temporary folder, where the template is built instead
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    raw = transform_graph.raw_statistics(Totals(), None, 3)
    raw["num_images"] = np.int64(1)
    transform_template.write_transform(str(staged), IMAGE_INFO, None, raw, ["cat"], root=str(blocked))
    output = tft.TFTransformOutput(str(staged))
    assert output.vocabulary_by_name(transform_graph.CLASS_NAMES) == [b"cat"]
    assert blocked.read_text() == "not a folder"
    # (TensorFlow's autograph writes its generated code there, and removes it as the process exits)
    assert [path.name for path in scratch.iterdir() if not path.name.startswith("__autograph_generated_file")] == []


def _template_in(root):
    from beam_etl.beam import transform_template  # pylint: disable=import-outside-toplevel

    return transform_template.template(IMAGE_INFO, None, root=root)


@pytest.mark.slow
def test_two_runs_writing_the_same_template_at_once_end_with_one_intact(tmp_path):
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    import multiprocessing  # pylint: disable=import-outside-toplevel

    from beam_etl.beam import transform_template  # pylint: disable=import-outside-toplevel

    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        folders = list(pool.map(_template_in, [str(tmp_path)] * 2))
    assert folders[0] == folders[1] and transform_template._is_intact(folders[0])  # pylint: disable=protected-access
    assert [p.name for p in (tmp_path / "transform-graphs").iterdir()] == [pathlib.Path(folders[0]).name]
