"""--resize pad and crop end to end: aspect kept, padding marked with an ignored value that the
statistics leave out and the transform graph and the loader turn into the ignore id -1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from beam_etl import loader
from beam_etl.loader import preview, verification
from tests.support.jobs import run_job
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow


def _originals(out, manifest, split="train"):
    return [example for example in read_examples([out / name for name in manifest["splits"][split]["files"]])
            if "#aug" not in example["key"]]


def test_pad_marks_the_padding_and_the_statistics_leave_it_out(pets_dir, tmp_path):
    out = tmp_path / "out"
    manifest = run_job(pets_dir, out, "--resize", "pad", "--image_size", "40x32", "--augment_copies", "1")
    assert manifest["image"]["resize"] == "pad" and manifest["image"]["mask_ignore_value"] == 255
    assert manifest["flags"]["resize"] == "pad" and verification.verify(str(out)) == {}
    originals = _originals(out, manifest)
    padded = [example for example in originals if (example["mask"] == 255).any()]
    assert padded and len(padded) < len(originals) + 1  # photos of other aspects than 40x32 are padded
    for example in padded:  # the padding is whole rows or columns at the sides, black in the image
        rows, cols = (example["mask"] != 255).any(axis=1), (example["mask"] != 255).any(axis=0)
        assert rows.all() or cols.all()
        assert example["image"][example["mask"] == 255].mean() < 8  # (JPEG rings a little at its edge)
    stats = manifest["statistics"]
    assert stats["class_values"] == [1, 2, 3] and stats["other_value_pixels"] == 0
    inside = [example["image"][example["mask"] != 255].astype(np.float64) for example in originals]
    assert stats["num_pixels"] == sum(len(pixels) for pixels in inside)
    np.testing.assert_allclose(stats["pixel_mean"], np.concatenate(inside).mean(axis=0), rtol=1e-9)
    for split in ("train", "test"):  # the transform graph's ids, and the loader's without statistics
        for _, mask in loader.make_dataset(str(out), split, 64, shuffle=False, deterministic=True):
            values = set(np.unique(mask.numpy()).tolist())
            assert -1 in values and values <= {-1, 0, 1, 2}
    assert preview.class_names(manifest)[255] == "padding (ignored)"
    plain = tmp_path / "plain"
    run_job(pets_dir, plain, "--resize", "pad", "--image_size", "40x32", "--no_statistics")
    for _, mask in loader.make_dataset(str(plain), "test", 64, shuffle=False, deterministic=True):
        assert set(np.unique(mask.numpy()).tolist()) <= {-1, 1, 2, 3} and (mask.numpy() == -1).any()


def test_crop_fills_the_output_and_keeps_the_centre(pets_dir, tmp_path):
    out = tmp_path / "out"
    manifest = run_job(pets_dir, out, "--resize", "crop", "--image_size", "40x32")
    assert manifest["image"]["resize"] == "crop" and "mask_ignore_value" not in manifest["image"]
    stretched = run_job(pets_dir, tmp_path / "stretched", "--image_size", "40x32")
    crop = {example["key"]: example["mask"] for example in _originals(out, manifest, "test")}
    stretch = {example["key"]: example["mask"] for example in _originals(tmp_path / "stretched", stretched, "test")}
    assert crop.keys() == stretch.keys() and all(set(np.unique(m).tolist()) <= {1, 2, 3} for m in crop.values())
    assert sum(not np.array_equal(crop[key], stretch[key]) for key in crop) > len(crop) // 2


def test_a_pad_value_that_is_also_a_class_is_refused(pets_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        run_job(pets_dir, tmp_path / "out", "--resize", "pad", "--mask_values", "1,2,255")
    assert exited.value.code == 2 and "--mask_values" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_job(pets_dir, tmp_path / "out", "--resize", "squash")
    assert "--resize: invalid choice: 'squash'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _pair(directory, name, image, mask):
    from PIL import Image

    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(directory / "images" / f"{name}.png")
    Image.fromarray(mask).save(directory / "masks" / f"{name}.png")


def _run_pairs(data, out, *extra):
    from pipelines import preprocess

    return preprocess.run(["--images", str(data / "images" / "*.png"), "--masks", str(data / "masks" / "*.png"),
                           "--output", str(out), "--image_size", "32", "--split_fractions", "test=1", *extra])


def test_inputs_the_modes_cannot_take_are_rejected_with_their_reason(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    _pair(data, "plain", rng.integers(0, 255, (60, 80, 3), np.uint8), rng.integers(1, 4, (60, 80), np.uint8))
    void = rng.integers(1, 4, (60, 80), np.uint8)
    void[:5] = 255  # VOC's "void": a value of the source's own
    _pair(data, "void", rng.integers(0, 255, (60, 80, 3), np.uint8), void)
    _pair(data, "strip", rng.integers(0, 255, (3, 600, 3), np.uint8), rng.integers(1, 4, (3, 600), np.uint8))
    rejected, uris = {}, {}
    for mode in ("stretch", "pad", "crop"):
        manifest = _run_pairs(data, tmp_path / mode, "--resize", mode)
        rejected[mode] = manifest["rejected"]["by_reason"]
        listed = (tmp_path / mode / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()
        uris.update((line["reason"], line["uri"]) for line in map(json.loads, listed))
    assert rejected == {"stretch": {}, "pad": {"reserved_mask_value": 1},
                        "crop": {"extreme_aspect": 1}}  # a 3x600 strip would be scaled to 6400x32
    # the file at fault: the mask for its values, the image for its shape
    assert uris == {"reserved_mask_value": str(data / "masks" / "void.png"),
                    "extreme_aspect": str(data / "images" / "strip.png")}
    manifest = _run_pairs(data, tmp_path / "values", "--mask_values", "1,2,3")
    listed = (tmp_path / "values" / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()
    (line,) = map(json.loads, listed)
    assert (line["reason"], line["uri"]) == ("mask_values", str(data / "masks" / "void.png"))


def test_pad_without_statistics_gives_the_padding_the_ignore_id_on_the_device_too(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(2)
    _pair(data, "wide", rng.integers(0, 255, (40, 80, 3), np.uint8), rng.integers(1, 4, (40, 80), np.uint8))
    _run_pairs(data, tmp_path / "out", "--resize", "pad", "--no_statistics")
    for on_device in (False, True):
        _, mask = next(iter(loader.make_dataset(str(tmp_path / "out"), "test", 1, shuffle=False,
                                                normalize_on_device=on_device)))
        mask = mask.numpy()[0]
        assert (mask[:8] == -1).all() and (mask[-8:] == -1).all()  # 40x80 fitted 16x32: 8 rows above, 8 below
        assert set(np.unique(mask[8:24]).tolist()) <= {1, 2, 3}
