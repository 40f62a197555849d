"""The job from gs:// to gs://, statistics included, and the loader reading gs:// shards, against
a real local Cloud Storage server (tests/support/emulators.py): Beam reaches it directly, TensorFlow
(tf.Transform, tf.io.gfile, TFRecordDataset) through a local TLS proxy."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from beam_etl.beam import manifest as manifest_lib
from beam_etl.beam import example_cache, lease, outcome_store, prune_cache
from beam_etl import diff, lineage, loader
from beam_etl.output_layout import CACHE_DIR, CHANGES_FILE, INCOMPLETE_DIR, REJECTED_FILE
from beam_etl.elements import EncodedExample
from beam_etl.loader import verification
from tests.support import emulators
from tests.support.jobs import job_process, output_files, run_job
from tests.support.tfrecords import read_examples

pytestmark = pytest.mark.slow

FLAGS = ("--augment_copies", "1", "--mask_values", "1,2,3", "--image_format", "raw")


@pytest.fixture(scope="module")
def gcs_pets(pets_dir, tmp_path_factory):
    """The shared dataset uploaded to gs://pets/raw on a fresh emulator, with TensorFlow's GCS
    client pointed at it too."""
    with emulators.gcs_emulator() as endpoint, emulators.tensorflow_gcs_through_proxy(
            endpoint, tmp_path_factory.mktemp("tls")):
        emulators.create_bucket("pets")
        emulators.upload_tree(pets_dir, "gs://pets/raw")
        yield "gs://pets/raw"


@pytest.fixture(scope="module")
def outputs(gcs_pets, pets_dir, tmp_path_factory):
    """The same job from gs:// to gs://out and from the local copy to a local directory."""
    local = tmp_path_factory.mktemp("local")
    return run_job(gcs_pets, "gs://pets/out", *FLAGS), local, run_job(pets_dir, local, *FLAGS)


def _download(prefix: str, directory):
    for uri in emulators.list_objects(prefix):
        if uri.endswith("/"):  # TensorFlow's empty "directory" objects
            continue
        path = directory / uri.removeprefix(prefix + "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(emulators.read_bytes(uri))
    return directory


def test_job_from_gcs_to_gcs_writes_what_it_writes_locally(outputs, gcs_pets, pets_dir, tmp_path):
    remote, local_dir, local = outputs
    assert remote == manifest_lib.read_manifest("gs://pets/out")
    for key in ("num_inputs", "num_written", "num_rejected", "num_examples", "statistics"):
        assert remote[key] == local[key], key
    downloaded = output_files(_download("gs://pets/out", tmp_path))
    # Everything but image/filename (which says where the input was) is the same: compare the
    # non-shard files byte for byte, and the shards' examples field by field.
    for name, data in output_files(local_dir).items():
        if name.endswith(".idx"):  # record sizes hold the uris; one line per record either way
            assert downloaded[name].count(b"\n") == data.count(b"\n"), name
        elif name.startswith("lineage/"):  # the same inputs and bytes, read from elsewhere
            # An outcome and a records hash name the input's uri (its records' image/filename),
            # so each differs between the two outputs; the rest of a line is the same.
            def where_from(lines: bytes, root: str) -> list[dict]:
                entries = [json.loads(line) for line in lines.decode().splitlines()]
                return [{**entry, "outcome": None, "records_sha256": None,
                         "image_uri": entry["image_uri"].replace(root, "ROOT"),
                         "mask_uri": entry["mask_uri"].replace(root, "ROOT")} for entry in entries]

            assert where_from(downloaded[name], gcs_pets) == where_from(data, str(pets_dir)), name
            for field in ("outcome", "records_sha256"):
                assert len({json.loads(line)[field] for line in downloaded[name].splitlines()}
                           | {json.loads(line)[field] for line in data.splitlines()}) == 2 * data.count(b"\n"), field
        elif not name.endswith(".tfrecord") and not name.startswith("rejected/"):
            assert downloaded[name] == data, name
    for split, info in local["splits"].items():
        assert remote["splits"][split]["files"] == info["files"]
        from_gcs = read_examples([tmp_path / name for name in info["files"]])
        from_disk = read_examples([local_dir / name for name in info["files"]])
        assert [e["key"] for e in from_gcs] == [e["key"] for e in from_disk]
        for a, b in zip(from_gcs, from_disk):
            assert a["filename"] == b["filename"].replace(str(pets_dir), gcs_pets)
            assert (a["image"] == b["image"]).all() and (a["mask"] == b["mask"]).all()
            assert (a["label"], a["label_name"]) == (b["label"], b["label_name"])
    remote_rejected = [json.loads(line) for line in
                       (tmp_path / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()]
    local_rejected = [json.loads(line) for line in
                      (local_dir / "rejected" / "rejected-00000-of-00001.jsonl").read_text().splitlines()]
    assert remote_rejected and all(r["uri"].startswith("gs://pets/raw/") for r in remote_rejected)
    assert [(r["key"], r["reason"]) for r in remote_rejected] == [(r["key"], r["reason"]) for r in local_rejected]
    # Nothing is left of the temporary files: object stores have no directories to delete.
    assert not emulators.list_objects("gs://pets/out/.incomplete")


def test_loader_streams_gcs_shards_like_local_ones(outputs):
    remote, local_dir, _ = outputs
    for split in ("train", "test"):
        from_gcs = loader.make_dataset("gs://pets/out", split, 4, shuffle=False, deterministic=True)
        from_disk = loader.make_dataset(str(local_dir), split, 4, shuffle=False, deterministic=True)
        batches = list(zip(from_gcs, from_disk, strict=True))
        assert sum(len(image) for (image, _), _ in batches) == remote["splits"][split]["num_examples"] > 0
        for (image, mask), (local_image, local_mask) in batches:
            np.testing.assert_array_equal(image.numpy(), local_image.numpy())  # the same transform graph
            np.testing.assert_array_equal(mask.numpy(), local_mask.numpy())


def test_loader_cli_reads_gcs(outputs, capsys):
    figures = loader.main(["--data", "gs://pets/out", "--batch_size", "4", "--steps", "3", "--json"])
    assert figures["data"] == "gs://pets/out" and figures["images"] == 12
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 12


def test_overwrite_clears_an_earlier_gcs_output(gcs_pets, capsys):
    run_job(gcs_pets, "gs://pets/again", "--no_statistics", "--num_shards", "3")
    first = set(emulators.list_objects("gs://pets/again"))
    assert "gs://pets/again/train-00002-of-00003.tfrecord" in first
    with pytest.raises(SystemExit) as exited:
        run_job(gcs_pets, "gs://pets/again", "--no_statistics")
    assert exited.value.code == 2 and "pass --overwrite" in capsys.readouterr().err
    run_job(gcs_pets, "gs://pets/again", "--overwrite")
    second = set(emulators.list_objects("gs://pets/again"))
    assert "gs://pets/again/train-00002-of-00003.tfrecord" not in second  # 2 shards now
    assert {"gs://pets/again/manifest.json", "gs://pets/again/transform_fn/saved_model.pb"} <= second


def test_gcs_paths_are_literal_and_leased(gcs_pets, capsys):
    """``gs://pets/exp[12]`` is one folder, not a pattern over its siblings; a lease is an object
    created only if absent (``ifGenerationMatch=0``), which a second run cannot take."""
    run_job(gcs_pets, "gs://pets/exp1", "--no_statistics")
    sibling = {uri: emulators.read_bytes(uri) for uri in emulators.list_objects("gs://pets/exp1")}
    first = run_job(gcs_pets, "gs://pets/exp[12]", "--no_statistics")
    second = run_job(gcs_pets, "gs://pets/exp[12]", "--no_statistics", "--overwrite")
    assert first["num_inputs"] == second["num_inputs"] > 0
    assert {uri: emulators.read_bytes(uri) for uri in emulators.list_objects("gs://pets/exp1")} == sibling
    assert verification.verify("gs://pets/exp[12]") == {}
    holder = lease.take("gs://pets/exp1")
    with pytest.raises(lease.LeaseError, match=f"leased by run {holder.run_id}"):
        lease.take("gs://pets/exp1")
    with pytest.raises(SystemExit) as exited:
        run_job(gcs_pets, "gs://pets/exp1", "--no_statistics", "--overwrite")
    assert exited.value.code == 2 and f"leased by run {holder.run_id}" in capsys.readouterr().err
    lease.release("gs://pets/exp1", holder.run_id)
    assert {uri: emulators.read_bytes(uri) for uri in emulators.list_objects("gs://pets/exp1")} == sibling


def test_the_cache_lineage_and_diff_on_gcs(outputs, gcs_pets, pets_dir, tmp_path, decodes, capsys):
    remote, _, _ = outputs
    decoded = decodes
    entries = outcome_store.OutcomeStore(f"gs://pets/out/{CACHE_DIR}").entries()
    assert len(entries) >= remote["num_written"] > 0 and all(
        location.segment.startswith(f"gs://pets/out/{CACHE_DIR}/") for (location,) in entries.values())
    again = run_job(gcs_pets, "gs://pets/out", *FLAGS, "--overwrite")  # nothing new: all from the cache on gs://
    assert decoded == []
    assert again["changes"] == {"against_run": remote["run_id"], "file": CHANGES_FILE, "added": 0, "removed": 0,
                                "changed": 0, "unchanged": remote["num_written"]}
    assert {k: v for k, v in again["files"].items() if k != CHANGES_FILE} == remote["files"]
    assert verification.verify("gs://pets/out") == {}
    capsys.readouterr()
    assert diff.main(["gs://pets/out", "gs://pets/out", "--counts"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"0 changed, {remote['num_written']} unchanged")
    # A shared cache on gs:// for outputs elsewhere.
    run_job(pets_dir, tmp_path / "a", "--cache", "gs://pets/shared-cache")
    decoded.clear()
    shared = run_job(pets_dir, tmp_path / "b", "--cache", "gs://pets/shared-cache")
    assert decoded == [] and shared["num_written"] == remote["num_written"]
    assert output_files(tmp_path / "a") == output_files(tmp_path / "b")


def test_a_cache_writer_on_gcs_puts_a_segment_per_bundle_and_per_held_bytes(gcs_pets, monkeypatch):
    del gcs_pets  # (the emulator it runs)
    folder = "gs://pets/cache-writer"
    outcomes = [example_cache.Outcome(examples=(EncodedExample(f"k{i}", "train", 0, bytes([i]) * 3000),))
                for i in range(5)]
    names = [example_cache.digest(str(i).encode()) for i in range(5)]
    monkeypatch.setattr(outcome_store, "HELD_BYTES", 7000)  # two entries' worth
    writer = outcome_store.OutcomeStore(folder)
    for name, outcome in zip(names[:3], outcomes):
        writer.write(name, outcome)  # the third passes HELD_BYTES: a segment is put
    assert len(outcome_store.OutcomeStore(folder).entries()) == 3
    writer.write(names[3], outcomes[3])
    assert len(outcome_store.OutcomeStore(folder).entries()) == 3  # held until the bundle ends
    writer.finish_bundle()
    writer.write(names[4], outcomes[4])
    writer.finish_bundle()
    writer.close()
    reader = outcome_store.OutcomeStore(folder)
    entries = reader.entries()
    assert sorted(entries) == sorted(names) and len({location.segment for (location,) in entries.values()}) == 3
    assert [reader.read(name)[0].examples for name in names] == [outcome.examples for outcome in outcomes]
    assert sorted(uri.rsplit(".", 1)[1] for uri in emulators.list_objects(folder)) == ["idx"] * 3 + ["seg"] * 3


def test_prune_cache_on_gcs_keeps_what_the_output_was_made_from(outputs, gcs_pets, decodes):
    remote, _, _ = outputs
    cache = f"gs://pets/out/{CACHE_DIR}"
    unused = outcome_store.OutcomeStore(cache)  # an outcome no output uses
    unused.write(example_cache.digest(b"unused"),
                 example_cache.Outcome(examples=(EncodedExample("u", "train", 0, b"x"),)))
    unused.finish_bundle()
    unused.close()
    folder = f"{cache}/{outcome_store.SEGMENTS}"
    before = set(emulators.list_objects(folder))
    assert prune_cache.main(["gs://pets/out"]) == 0
    after = set(emulators.list_objects(folder))
    assert not before & after and sorted(uri.rsplit(".", 1)[1] for uri in after) == ["idx", "seg"]
    _, index = lineage.read_output("gs://pets/out")
    assert sorted(outcome_store.OutcomeStore(cache).entries()) == sorted(entry["outcome"] for entry in index.values())
    decodes.clear()
    again = run_job(gcs_pets, "gs://pets/out", *FLAGS, "--overwrite", "--num_shards", "3")  # the job runs, on the cache
    # Only the rejected inputs are computed again: no lineage index names their outcomes.
    rejected = {json.loads(line)["key"] for line in emulators.read_bytes(
        f"gs://pets/out/{REJECTED_FILE}").decode().splitlines()}
    assert decodes and set(decodes) <= rejected and not set(decodes) & set(index)
    assert again["num_written"] == remote["num_written"]


def test_reads_keep_a_client_per_thread_not_one_per_object(gcs_pets, pets_dir, monkeypatch):
    import threading  # pylint: disable=import-outside-toplevel

    from apache_beam.io.gcp import gcsio  # pylint: disable=import-outside-toplevel

    from beam_etl.beam import filesystem  # pylint: disable=import-outside-toplevel

    made = []
    real = gcsio.GcsIO
    monkeypatch.setattr(gcsio, "GcsIO", lambda *a, **kw: made.append(real(*a, **kw)) or made[-1])
    names = sorted(p.relative_to(pets_dir).as_posix() for p in (pets_dir / "images").iterdir())[:6]
    for name in names:  # one thread: one client, made once
        assert filesystem.read_bytes(f"{gcs_pets}/{name}") == (pets_dir / name).read_bytes()
        assert filesystem.read_range(f"{gcs_pets}/{name}", 2, 5) == (pets_dir / name).read_bytes()[2:7]
    assert len(made) <= 1
    held, release = threading.Barrier(3), threading.Event()

    def hold_one():  # a client in use by a thread is another thread's to wait for: never shared
        with filesystem.gcs_client() as client:
            seen.append(client)
            held.wait()
            release.wait()

    seen = []
    threads = [threading.Thread(target=hold_one) for _ in range(2)]
    for thread in threads:
        thread.start()
    held.wait()
    assert seen[0] is not seen[1]
    release.set()
    for thread in threads:
        thread.join()
    assert len(made) <= 2
    before = len(made)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")  # another endpoint: another client
    with filesystem.gcs_client() as client:
        assert len(made) == before + 1 and client is made[-1] and client not in seen


def test_a_missing_object_is_a_missing_file(gcs_pets):
    from beam_etl.beam import filesystem  # pylint: disable=import-outside-toplevel

    for read in (filesystem.read_bytes, lambda path: filesystem.read_range(path, 0, 4)):
        with pytest.raises(FileNotFoundError):
            read(f"{gcs_pets}/no such object")


def test_a_folder_marker_is_no_input(gcs_pets):
    """The Cloud Console's "Create folder" leaves an empty ``images/`` object, which ``*`` and
    ``**`` match: it would be an input keyed "", rejected, counted."""
    from google.cloud import storage  # pylint: disable=import-outside-toplevel

    from beam_etl.beam.sources import matching  # pylint: disable=import-outside-toplevel

    bucket = storage.Client.create_anonymous_client().bucket("pets")
    for name, data in (("marked/images/", b""), ("marked/images/a.jpg", b"x"), ("marked/images/sub/", b"")):
        bucket.blob(name).upload_from_string(data)
    for glob in ("gs://pets/marked/images/*", "gs://pets/marked/**", "gs://pets/marked/images/"):
        assert list(matching.matches(glob)) == ["gs://pets/marked/images/a.jpg"], glob


def test_star_matches_a_backslash_in_an_object_s_name_as_locally(gcs_pets):
    """``*`` takes a ``\\`` in an object's name, as in a local file's and as ``gsutil``'s ``*``
    does: Beam's ``*`` (``[^/\\\\]*``, for Windows paths) passed over such an input without a
    word. ``*`` still stays within a folder, ``**`` crosses folders, and a limit still holds."""
    from google.cloud import storage  # pylint: disable=import-outside-toplevel

    from beam_etl.beam.sources import matching  # pylint: disable=import-outside-toplevel

    bucket = storage.Client.create_anonymous_client().bucket("pets")
    for name in ("odd/images/a\\b.jpg", "odd/images/c.jpg", "odd/images/sub/d.jpg", "odd/images/e.png"):
        bucket.blob(name).upload_from_string(b"x")
    here = "gs://pets/odd/images/"
    assert sorted(matching.matches(here + "*.jpg")) == [here + "a\\b.jpg", here + "c.jpg"]
    assert sorted(matching.matches(here + "a*")) == [here + "a\\b.jpg"]
    assert sorted(matching.matches("gs://pets/odd/**.jpg")) == [here + "a\\b.jpg", here + "c.jpg", here + "sub/d.jpg"]
    assert sorted(matching.matches(here)) == [here + "a\\b.jpg", here + "c.jpg", here + "e.png"]
    assert list(matching.matches(here + "a\\b.jpg")) == [here + "a\\b.jpg"]
    assert len(list(matching.matches(here + "*", limit=2))) == 2


def test_an_exclusive_create_whose_object_is_there_with_its_own_bytes_took_it(gcs_pets):
    """The storage client retries a request whose answer was lost; where the first attempt made
    the object, the retry fails its precondition: the lease is this run's all the same (it
    would refuse itself, a run alive on this host), and a lease of other bytes is another's."""
    from beam_etl.beam import filesystem  # pylint: disable=import-outside-toplevel

    path = "gs://pets/exclusive/lease.json"
    assert filesystem.create_exclusive(path, b'{"run_id": "mine"}')
    assert filesystem.create_exclusive(path, b'{"run_id": "mine"}')  # (as a retry finds it)
    assert not filesystem.create_exclusive(path, b'{"run_id": "another"}')
    assert emulators.read_bytes(path) == b'{"run_id": "mine"}'


def test_a_fault_not_of_the_input_fails_the_read_and_the_object_s_own_is_a_rejection(gcs_pets):
    """A 429 or 5xx that outlasts the storage client's retries, a stalled read, a 401 (the job's
    credentials), is not the input's fault: recorded as the input's rejection, it would drop the
    input from the output. The read raises instead (the runner retries the bundle, or the run
    fails with its output untouched and its finished work cached). A 403 is the object's: a
    rejection. A 503 that the client's own retries get past is no fault at all."""
    # pylint: disable=import-outside-toplevel,protected-access
    import ssl

    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions
    from google.resumable_media import DataCorruption

    from beam_etl.beam.process_examples import StoreReadError, _of_the_input, read_uri
    from beam_etl.elements import RejectedInput

    uri = sorted(emulators.list_objects(f"{gcs_pets}/images"))[0]
    name = uri.removeprefix("gs://pets/")
    data = emulators.read_bytes(uri)
    endpoint = os.environ["STORAGE_EMULATOR_HOST"]
    with emulators.failing_gcs_proxy(endpoint, name, 503, times=2) as answered:
        assert read_uri(uri, "read_image", timeout_s=60.0) == data
    assert answered[:2] == [503, 503] and 200 in answered
    with emulators.failing_gcs_proxy(endpoint, name, 403) as answered:
        with pytest.raises(RejectedInput) as rejected:
            read_uri(uri, "read_image", timeout_s=60.0)
    assert rejected.value.reason == "unreadable" and "403" in rejected.value.message and answered == [403]
    with emulators.failing_gcs_proxy(endpoint, name, 401) as answered:  # (the client would refresh its token)
        with pytest.raises(StoreReadError, match=f"{uri}: InvalidOperation: Anonymous credentials cannot be refreshed"):
            read_uri(uri, "read_image", timeout_s=60.0)
    assert answered == [401]
    with emulators.failing_gcs_proxy(endpoint, name, 503) as answered:
        started = time.monotonic()
        with pytest.raises(StoreReadError, match=f"{uri}: no complete read within 2 s"):
            read_uri(uri, "read_image", timeout_s=2.0)
        assert time.monotonic() - started < 5 and len(answered) >= 2 and set(answered) == {503}
    # What the client raises once its retries run out, and errors no server here gives:
    for status in (400, 403, 404, 410, 416):
        assert _of_the_input(exceptions.from_http_status(status, "x")), status
    for status in (401, 408, 429, 500, 502, 503, 504):
        assert not _of_the_input(exceptions.from_http_status(status, "x")), status
    assert _of_the_input(FileNotFoundError(uri)) and _of_the_input(PermissionError(uri))
    for error in (exceptions.RetryError("Timeout of 120.0s exceeded", exceptions.ServiceUnavailable("x")),
                  auth_exceptions.RefreshError("metadata server"), auth_exceptions.TransportError(),
                  TimeoutError(), ssl.SSLError(), ConnectionResetError(), DataCorruption(None, "crc32c"),
                  RuntimeError("of no known kind")):
        assert not _of_the_input(error), error


def test_a_stale_gs_lease_is_broken_by_one_run_only_and_a_delete_takes_only_what_it_read(gcs_pets):
    """Two runs that read the same stale lease on gs:// both go on to break it: the second
    one's delete must not take the lease that the first made since (both would then write
    one output). The same holds for a run releasing a lease that another broke as stale."""
    # pylint: disable=import-outside-toplevel,protected-access
    from beam_etl.beam import filesystem

    output = "gs://pets/leased"
    path = f"{output}/.incomplete/lease.json"
    gone = lease.Holder(run_id="gone", host="elsewhere", pid=1, process_start="", started=time.time() - 100 * 3600)
    assert filesystem.create_exclusive(path, json.dumps(gone.__dict__).encode())
    (first, first_read), (second, second_read) = lease._read_lease(output), lease._read_lease(output)
    assert first == second == gone and first_read == second_read is not None
    lease._remove_stale(path, "first", first_read)
    taken = lease.take(output, break_stale=True, timeout_hours=1)  # (the first run makes its own)
    with pytest.raises(lease.LeaseError, match=f"another run broke the lease {path} first"):
        lease._remove_stale(path, "second", second_read)
    assert lease.read_holder(output) == taken
    # A delete of the generation read deletes nothing made since; of the one there, it deletes it.
    assert not filesystem.delete_version(path, second_read) and lease.read_holder(output) == taken
    assert filesystem.delete_version(path, lease._read_lease(output)[1]) and lease.read_holder(output) is None
    assert not filesystem.delete_version(path, second_read)  # (gone: nothing to delete)
    # A lease whose object could not be read (its generation unknown) is not broken blind.
    assert filesystem.create_exclusive(path, b"{}")
    with pytest.raises(lease.LeaseError, match="could not be read, and is not broken unread"):
        lease._remove_stale(path, "third", None)
    assert emulators.read_bytes(path) == b"{}"


@pytest.mark.parametrize("flags, place", [
    (("--images", "{d}/**/*.jpg", "--masks", "{d}/annotations/trimaps/*.png"), ("--output", "{d}/out")),
    (("--images", "{d}/images/*.jpg", "--masks", "{d}/annotations/trimaps/*.png"), ("--output", "{d}/images")),
    (("--oxford_pets", "{d}"), ("--output", "{d}/images/out")),
    (("--oxford_pets", "{d}/"), ("--cache", "{d}/annotations/trimaps/cache")),
])
def test_an_output_or_cache_in_a_prefix_the_sources_list_on_gcs_is_refused(gcs_pets, capsys, flags, place):
    """As for local folders: the job's files would be read as inputs by its next run."""
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel

    before = sorted(emulators.list_objects("gs://pets"))
    argv = [arg.format(d=gcs_pets) for arg in flags]
    flag, value = place[0], place[1].format(d=gcs_pets)
    argv += [flag, value, "--image_size", "32"] + (["--output", "gs://pets/elsewhere"] if flag == "--cache" else [])
    with pytest.raises(SystemExit) as exited:
        preprocess.run(argv)
    error = capsys.readouterr().err
    assert exited.value.code == 2 and f"{flag} {value!r} lies in " in error and argv[1] in error
    assert sorted(emulators.list_objects("gs://pets")) == before


def _kept_objects(prefix: str) -> dict[str, bytes]:
    """The output's objects with their bytes: not the run's own (``.incomplete/``) or the cache's."""
    return {uri: emulators.read_bytes(uri) for uri in emulators.list_objects(prefix)
            if f"{prefix}/{INCOMPLETE_DIR}/" not in uri and f"{prefix}/{CACHE_DIR}/" not in uri}


def test_a_gcs_replacement_killed_in_its_swap_is_rolled_back_by_the_next_run(gcs_pets, tmp_path):
    """Killed with the old files out and the new ones in, before the manifest (the other points
    of the swap are tested locally, tests/integration/test_output_safety.py): on gs:// each
    move is a copy and a delete."""
    out, crash_at = "gs://pets/swapped", "new_files_in"
    run_job(gcs_pets, out)
    earlier = _kept_objects(out)
    assert f"{out}/manifest.json" in earlier and f"{out}/transform_fn/saved_model.pb" in earlier
    flags = ["--oxford_pets", gcs_pets, "--output", out, "--num_shards", "2", "--image_size", "32", "--overwrite"]
    killed = job_process(flags, crash_at=crash_at, temporary=tmp_path)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert f"{out}/manifest.json" not in emulators.list_objects(out)  # mid-swap: readers refuse the folder
    with pytest.raises(loader.IncompleteOutputError):
        loader.make_dataset(out, "train", 4)
    # The next run breaks the dead run's lease and rolls its swap back before anything else.
    again = job_process([*flags, "--break_lease"], crash_at="after_lease", temporary=tmp_path)
    assert again.returncode == -9, again.stderr[-2000:]
    assert _kept_objects(out) == earlier
    assert verification.verify(out) == {}
