"""Single inputs never end the job: each is written or rejected with its uri and reason, and a
run with nothing to learn statistics from still completes with a manifest that says why."""

from __future__ import annotations

import errno
import io
import json
import os
import resource
import threading

import numpy as np
import pytest
from PIL import Image

from beam_etl.loader import verification
from beam_etl.tools.sample_data import generate
from beam_etl.beam.process_examples import StoreReadError, read_uri
from beam_etl.elements import RejectedInput
from pipelines import preprocess
from tests.support import file_modes
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG")
    return buffer.getvalue()


def _rejected_rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()]


def _rejected(out) -> dict[str, dict]:
    return {row["key"]: row for row in _rejected_rows(out)}


def _written_keys(out) -> set[str]:
    """The keys of the inputs written, from the lineage index beside the shards."""
    return {json.loads(line)["key"] for path in (out / "lineage").glob("*.jsonl") for line in path.read_text().splitlines()}


def _pairs(directory, names, side=40):
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        (directory / "images" / f"{name}.jpg").write_bytes(_jpeg(rng.integers(0, 255, (side, side, 3), np.uint8)))
        (directory / "masks" / f"{name}.png").write_bytes(_png(rng.integers(1, 4, (side, side), np.uint8)))


def _run(data, out, *extra):
    return preprocess.run(["--images", str(data / "images" / "*.jpg"), "--masks", str(data / "masks" / "*.png"),
                           "--output", str(out), "--image_size", "16", *extra])


def test_a_fifo_and_a_tiny_image_are_rejected_and_the_rest_written(tmp_path):
    data = tmp_path / "data"
    _pairs(data, [f"ok{i}" for i in range(6)])
    os.mkfifo(data / "images" / "fifo.jpg")  # opening it would block for ever: no writer
    (data / "masks" / "fifo.png").write_bytes(_png(np.ones((40, 40), np.uint8)))
    (data / "images" / "tiny.jpg").write_bytes(_jpeg(np.zeros((2, 2, 3), np.uint8)))
    (data / "masks" / "tiny.png").write_bytes(_png(np.ones((2, 2), np.uint8)))
    manifest = _run(data, tmp_path / "out", "--augment_copies", "1", "--split_fractions", "train=1")
    rejected = _rejected(tmp_path / "out")
    assert {key: r["reason"] for key, r in rejected.items()} == {"fifo": "not_a_file",
                                                                "tiny": "too_small_to_augment"}
    assert rejected["fifo"]["uri"] == str(data / "images" / "fifo.jpg")
    assert "not opened" in rejected["fifo"]["message"]
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (8, 6, 2)
    assert manifest["splits"]["train"]["num_examples"] == 12  # each with its augmented copy


def test_a_broken_link_is_an_input_rejected_with_its_reason(tmp_path):
    """Beam's listing drops a link whose target is gone: a pair of two such links vanished from
    the run without a word, and one such link made its partner an orphan."""
    data = tmp_path / "data"
    _pairs(data, ["ok0", "ok1", "ok2", "half"])
    os.symlink(tmp_path / "nowhere.jpg", data / "images" / "gone.jpg")
    os.symlink(tmp_path / "nowhere.png", data / "masks" / "gone.png")
    (data / "masks" / "half.png").unlink()
    os.symlink(tmp_path / "nowhere.png", data / "masks" / "half.png")
    manifest = _run(data, tmp_path / "out", "--split_fractions", "train=1")
    rejected = _rejected(tmp_path / "out")
    assert {key: (r["reason"], r["uri"]) for key, r in rejected.items()} == {
        "gone": ("unreadable", str(data / "images" / "gone.jpg")),
        "half": ("unreadable", str(data / "masks" / "half.png"))}
    assert all("FileNotFoundError" in r["message"] for r in rejected.values())
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (5, 3, 2)


def test_a_file_whose_name_is_not_utf8_is_an_input_rejected_with_its_name_shown(tmp_path):
    """A local file name is bytes; Beam carries names as UTF-8 text: one such name failed the
    whole run, in the listing step."""
    data = tmp_path / "data"
    _pairs(data, ["ok0", "ok1", "ok2", "bad", "half"])
    for name in ("images/bad.jpg", "masks/bad.png", "images/half.jpg"):  # -> bad\xff.jpg, ...
        path = os.fsencode(data / name)
        os.rename(path, path[:-4] + b"\xff" + path[-4:])
    manifest = _run(data, tmp_path / "out", "--split_fractions", "train=1")
    lines = (tmp_path / "out" / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()
    rejected = sorted((r["uri"], r["reason"], r["stage"]) for r in map(json.loads, lines))
    assert rejected == [(f"{data}/images/bad\\xff.jpg", "file_name_not_utf8", "pair"),
                        (f"{data}/images/half\\xff.jpg", "file_name_not_utf8", "pair"),
                        (f"{data}/masks/bad\\xff.png", "file_name_not_utf8", "pair"),
                        (f"{data}/masks/half.png", "missing_image", "pair")]
    assert (manifest["num_written"], manifest["num_rejected"]) == (3, 4)
    assert verification.verify(str(tmp_path / "out")) == {}


def test_a_key_of_the_form_of_an_augmented_copys_is_rejected_never_merged(tmp_path):
    """``cat_1#aug1`` would share its record key with the first copy of ``cat_1``: one of the two
    records would be lost in the shard (its bytes read back for the other's key)."""
    data = tmp_path / "data"
    _pairs(data, ["cat_1", "cat_1#aug1", "cat_1#augment", "dog#aug12"])
    manifest = _run(data, tmp_path / "out", "--augment_copies", "1", "--split_fractions", "train=1")
    assert {key: r["reason"] for key, r in _rejected(tmp_path / "out").items()} == {
        "cat_1#aug1": "reserved_key", "dog#aug12": "reserved_key"}
    keys = [example["key"] for example in read_examples(
        [tmp_path / "out" / name for name in manifest["splits"]["train"]["files"]])]
    assert sorted(keys) == ["cat_1", "cat_1#aug1", "cat_1#augment", "cat_1#augment#aug1"]
    assert verification.verify(str(tmp_path / "out")) == {}


def test_a_local_read_of_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(RejectedInput, match="not a regular file"):
        read_uri(str(fifo), "read_image")
    with pytest.raises(RejectedInput, match="not a regular file"):
        read_uri(str(tmp_path), "read_image")  # a folder


def test_a_local_read_that_fails_for_a_fault_of_the_process_fails_the_step_never_rejects_the_input(tmp_path):
    """Too many files open is this process's fault, not the file's: a rejection would stand in
    the output, and the next run of the same files would call it up to date."""
    image = tmp_path / "x.jpg"
    image.write_bytes(b"any bytes")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.dup(0)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # (the next file opened: EMFILE)
    try:
        with pytest.raises(OSError) as raised:
            read_uri(str(image), "read_image")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raised.value.errno == errno.EMFILE and not isinstance(raised.value, StoreReadError)
    assert read_uri(str(image), "read_image") == b"any bytes"


def test_a_remote_read_that_stalls_is_given_up_after_its_timeout():
    """A server that accepts the connection and never answers stands in for a stalled read: the
    read fails (a fault of the connection, not of the input), and does not hang the job."""
    import socket
    import time

    from tests.support import emulators

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []

    def accept_and_say_nothing():
        try:
            while True:
                held.append(listener.accept())
        except OSError:  # the listener closed at the end of the test
            pass

    threading.Thread(target=accept_and_say_nothing, daemon=True).start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{listener.getsockname()[1]}"
    emulators.use_anonymous_credentials()
    try:
        started = time.monotonic()
        with pytest.raises(StoreReadError, match="gs://stalled/images/a.jpg: no complete read within 1 s"):
            read_uri("gs://stalled/images/a.jpg", "read_image", timeout_s=1.0)
        assert time.monotonic() - started < 5
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST")
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        listener.close()


def test_an_oxford_name_listed_twice_differently_is_a_conflict_naming_both_lines(tmp_path):
    data = tmp_path / "pets"
    generate(str(data), num_images=8, seed=2)
    trainval = data / "annotations" / "trainval.txt"
    test_list = data / "annotations" / "test.txt"
    name, *fields = [line for line in trainval.read_text().splitlines() if not line.startswith("#")][0].split()
    with open(test_list, "a", encoding="utf-8") as handle:
        handle.write(f"{name} {int(fields[0]) % 37 + 1} {fields[1]} {fields[2]}\n")  # another class, another split
    manifest = preprocess.run(["--oxford_pets", str(data), "--output", str(tmp_path / "out"), "--image_size", "16",
                               "--no_statistics"])
    conflict = _rejected(tmp_path / "out")[name]
    assert conflict["reason"] == "conflicting_lists"
    assert f"{trainval}:" in conflict["message"] and f"{test_list}:" in conflict["message"]
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (8, 7, 1)
    # The same files named again by another source: the name is written by none of them, and
    # each file is one input (not rejected again, nor rejected as a duplicate of itself).
    manifest = preprocess.run(["--oxford_pets", str(data), "--images", str(data / "images" / "*.jpg"),
                               "--masks", str(data / "annotations" / "trimaps" / "*.png"),
                               "--output", str(tmp_path / "both"), "--image_size", "16", "--no_statistics"])
    assert [row["reason"] for row in _rejected_rows(tmp_path / "both")] == ["conflicting_lists"]
    assert name not in _written_keys(tmp_path / "both") and len(_written_keys(tmp_path / "both")) == 7
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (8, 7, 1)


def test_a_run_whose_every_input_is_rejected_completes_without_statistics(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (data / "images" / f"{name}.jpg").write_bytes(b"not a jpeg")
        (data / "masks" / f"{name}.png").write_bytes(_png(np.ones((8, 8), np.uint8)))
    manifest = _run(data, tmp_path / "out")
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (3, 0, 3)
    assert manifest["statistics"] is None and manifest["statistics_absent"] == "the training split is empty"
    assert not (tmp_path / "out" / "transform_fn").exists()  # a placeholder's graph is not published
    assert verification.verify(str(tmp_path / "out")) == {}


def test_a_run_with_an_empty_training_split_completes_without_statistics(tmp_path):
    data = tmp_path / "data"
    _pairs(data, ["a", "b", "c", "d"])
    manifest = _run(data, tmp_path / "out", "--split_fractions", "test=1")
    assert manifest["splits"]["test"]["num_examples"] == 4 and set(manifest["splits"]) == {"test"}
    assert manifest["statistics"] is None and manifest["statistics_absent"] == "the training split is empty"
    assert verification.verify(str(tmp_path / "out")) == {}


def test_an_oxford_list_saved_with_a_byte_order_mark_labels_its_first_name(tmp_path):
    """Some editors begin a UTF-8 file with a byte order mark: it is not part of the first name."""
    data = tmp_path / "pets"
    generate(str(data), num_images=6, seed=4)
    trainval = data / "annotations" / "trainval.txt"
    lines = [line for line in trainval.read_text().splitlines() if not line.startswith("#")]
    trainval.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    manifest = preprocess.run(["--oxford_pets", str(data), "--output", str(tmp_path / "out"), "--image_size", "16",
                               "--no_statistics", "--val_fraction", "0"])
    first = lines[0].split()[0]
    assert (manifest["num_inputs"], manifest["num_written"], manifest["num_rejected"]) == (6, 6, 0)
    shards = sorted((tmp_path / "out").glob("train-*.tfrecord"))
    train = {example["key"]: example["label"] for example in read_examples(shards)}
    assert train[first] == int(lines[0].split()[1]) - 1  # listed in trainval, with its class


@pytest.mark.parametrize("damage, says", [
    (b"caf\xe9_1 1 1 1\n", ":{line}: not UTF-8 text (byte 0xe9)"),
    ("with a byte order mark", ":{line}: not UTF-8 text (byte 0xe9)"),
    (b"broken line\n", ":{line}: expected 'NAME CLASS_ID SPECIES BREED_ID', got 'broken line'"),
    (None, "trainval.txt is not a regular file"),
])
def test_an_oxford_list_the_job_cannot_read_is_refused_at_launch_naming_file_and_line(tmp_path, capsys, damage, says):
    data = tmp_path / "pets"
    generate(str(data), num_images=6, seed=4)
    trainval = data / "annotations" / "trainval.txt"
    says = says.format(line=len(trainval.read_bytes().splitlines()) + 1)
    if damage is None:
        trainval.unlink()
        os.mkfifo(trainval)  # opening it would wait for ever for a writer
    elif damage == "with a byte order mark":  # (offsets count from after it)
        trainval.write_bytes(b"\xef\xbb\xbf" + trainval.read_bytes() + b"caf\xe9_1 1 1 1\n")
    else:
        with open(trainval, "ab") as handle:
            handle.write(damage)
    with pytest.raises(SystemExit) as refused:
        preprocess.run(["--oxford_pets", str(data), "--output", str(tmp_path / "out"), "--image_size", "16"])
    assert refused.value.code == 2
    error = capsys.readouterr().err
    assert f"--oxford_pets {str(data)!r}: {trainval}" in error and says in error, error
    assert not (tmp_path / "out").exists()


def test_a_folder_under_a_glob_the_job_cannot_list_is_refused_at_launch_naming_it(tmp_path):
    """Its inputs are neither written nor rejected: the run must not go on without them."""
    data = tmp_path / "data"
    _pairs(data / "open", ["a", "b"])
    _pairs(data / "locked", ["c"])
    (data / "locked").chmod(0)
    try:
        refused = file_modes.run_module("pipelines.preprocess", "--images", str(data / "**" / "*.jpg"),
                                        "--masks", str(data / "**" / "*.png"), "--output", str(tmp_path / "out"),
                                        "--image_size", "16", "--no_statistics")
    finally:
        (data / "locked").chmod(0o755)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"--images {str(data / '**' / '*.jpg')!r}: cannot list the folder {str(data / 'locked')!r} " \
        "(Permission denied), which may hold files it matches" in refused.stderr
    assert not (tmp_path / "out").exists()
