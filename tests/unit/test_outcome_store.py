"""The cache's store: segments and their indexes, the digests of local files, what a crash or
a damaged file leaves; never a wrong outcome."""

import dataclasses
import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from beam_etl import file_states
from beam_etl.beam import lease, outcome_store
from tests.support import full_disk
from tests.unit.test_example_cache import OUTCOMES, D
from tests.unit.test_file_states import _state

ROOT = str(pathlib.Path(__file__).resolve().parents[2])


def _names(count):
    return [D(str(i).encode()) for i in range(count)]


def _stored(folder, names, outcome=OUTCOMES[0]) -> outcome_store.OutcomeStore:
    """A store in ``folder`` whose one writer wrote ``outcome`` under each of ``names``, closed."""
    store = outcome_store.OutcomeStore(str(folder))
    for name in names:
        store.write(name, outcome)
    store.close()
    return store


def test_entries_in_segments_come_back_from_a_fresh_reader(tmp_path):
    writers = [outcome_store.OutcomeStore(str(tmp_path)) for _ in range(2)]
    names = _names(6)
    for i, name in enumerate(names):  # two writers, each its own segment
        writers[i % 2].write(name, OUTCOMES[i % 3])
    for writer in writers:
        writer.finish_bundle()
        writer.close()
    segments = sorted(p.name for p in (tmp_path / outcome_store.SEGMENTS).iterdir())
    assert len(segments) == 4 and {p.rsplit(".", 1)[1] for p in segments} == {"seg", "idx"}
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert sorted(reader.entries()) == sorted(names)
    for i, name in enumerate(names):
        outcome, damaged = reader.read(name)
        assert not damaged and outcome.examples == OUTCOMES[i % 3].examples and outcome.sums == OUTCOMES[i % 3].sums
    assert reader.read(D(b"never written")) == (None, False)
    reader.close()


def test_a_cut_index_line_a_cut_segment_and_a_misplaced_line(tmp_path):
    """What a writer killed mid-write, or a damaged index, leaves: never taken for an outcome."""
    names = _names(4)
    _stored(tmp_path, names, OUTCOMES[1])
    (index,) = (tmp_path / outcome_store.SEGMENTS).glob("*.idx")
    segment = index.with_suffix(".seg")
    lines = index.read_text().splitlines(keepends=True)
    ((_, location),) = outcome_store.read_index(lines[3], str(segment))
    os.truncate(segment, location.offset + location.length - 7)  # the last entry cut short
    misplaced = lines[1].replace(names[1], names[2])  # names[2] pointing at names[1]'s bytes
    index.write_text(lines[0] + misplaced + lines[3] + lines[1][:30])  # and a line cut short
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert reader.read(names[0])[0].examples == OUTCOMES[1].examples
    assert reader.read(names[2]) == (None, True)
    assert reader.read(names[3]) == (None, True)
    assert reader.read(names[1]) == (None, False)  # its line was cut: not listed
    reader.write(names[3], OUTCOMES[0])  # computed again: a later entry of the same name
    reader.close()
    again = outcome_store.OutcomeStore(str(tmp_path))
    assert again.read(names[3])[0].examples == OUTCOMES[0].examples and len(again.entries()[names[3]]) == 2
    again.close()


@pytest.mark.parametrize("offset, length, listed", [(2**63 - 1, 10, False), (10, 2**63 - 1, False),
                                                   (2**64, 1, False), (0, 2**70, False), (0, 2**40, True)])
def test_an_index_line_past_any_file_is_a_damaged_line_not_an_error(tmp_path, offset, length, listed):
    """A line no writer could have written (an offset or a length past the largest file) must
    not fail every run and every prune of the cache."""
    names = _names(2)
    _stored(tmp_path, names[:1])
    folder = tmp_path / outcome_store.SEGMENTS
    (folder / ("0" * 32 + ".seg")).write_bytes(b"x" * 20)
    (folder / ("0" * 32 + ".idx")).write_text(f"{names[1]} {offset} {length}\n{names[0]} {offset} {length}\n")
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert reader.read(names[1]) == (None, listed)  # (listed: read past the segment's end, damaged)
    assert reader.read(names[0])[0].examples == OUTCOMES[0].examples
    assert reader.prune({names[0], names[1]}, set())["entries_kept"] == 1
    assert sorted(outcome_store.OutcomeStore(str(tmp_path)).entries()) == [names[0]]


def test_a_local_writer_leaves_each_entry_readable_at_once(tmp_path):
    """Appended and flushed per entry: a run killed after it keeps it (nothing waits on close)."""
    writer = outcome_store.OutcomeStore(str(tmp_path))
    name = _names(1)[0]
    writer.write(name, OUTCOMES[0])
    assert outcome_store.OutcomeStore(str(tmp_path)).read(name)[0].sums == OUTCOMES[0].sums
    writer.close()


def test_a_name_written_twice_in_one_segment_keeps_both_places(tmp_path):
    """A retried bundle writes an entry again: were the later copy cut, the earlier one serves."""
    cache = outcome_store.OutcomeStore(str(tmp_path))
    name = _names(1)[0]
    cache.write(name, OUTCOMES[0])
    cache.write(name, OUTCOMES[0])
    cache.close()
    (index,) = (tmp_path / outcome_store.SEGMENTS).glob("*.idx")
    segment = index.with_suffix(".seg")
    os.truncate(segment, segment.stat().st_size - 3)
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert len(reader.entries()[name]) == 2 and reader.read(name)[0].sums == OUTCOMES[0].sums


def test_an_index_is_read_on_from_where_this_process_left_it(tmp_path):
    """Each instance of the step reads the indexes (Beam's Dask runner sets one up per
    partition): what this process read before is not read again, a line being written is left
    for later, and a segment that is gone holds no entry."""
    names = _names(5)
    writer = outcome_store.OutcomeStore(str(tmp_path))
    for name in names[:2]:
        writer.write(name, OUTCOMES[1])
    assert sorted(outcome_store.OutcomeStore(str(tmp_path)).entries()) == sorted(names[:2])
    writer.write(names[2], OUTCOMES[1])
    (index,) = (tmp_path / outcome_store.SEGMENTS).glob("*.idx")
    line = index.read_text().splitlines(keepends=True)[2]
    with open(index, "a", encoding="ascii") as handle:  # another writer's line, half written
        handle.write(line.replace(names[2], names[3])[:40])
    assert sorted(outcome_store.OutcomeStore(str(tmp_path)).entries()) == sorted(names[:3])
    with open(index, "a", encoding="ascii") as handle:
        handle.write(line.replace(names[2], names[3])[40:])
    reader = outcome_store.OutcomeStore(str(tmp_path))
    entries = reader.entries()
    assert sorted(entries) == sorted(names[:4]) and all(len(places) == 1 for places in entries.values())
    assert reader.read(names[3]) == (None, True)  # its line points at names[2]'s bytes
    writer.close()
    index.with_suffix(".seg").unlink()
    assert outcome_store.OutcomeStore(str(tmp_path)).read(names[0]) == (None, False)
    other = outcome_store.OutcomeStore(str(tmp_path / "elsewhere"))
    assert other.entries() == {} and other.read(names[0]) == (None, False)


def test_a_failed_write_starts_a_new_segment(tmp_path):
    """A write the disk refuses (here: past the file size limit) fails the bundle; the writer's
    next entries go to a new segment, where the index says they are."""
    script = f"""
import resource, signal
from beam_etl.beam import lease, outcome_store
from tests.unit.test_example_cache import OUTCOMES
from tests.unit.test_outcome_store import _names
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
cache = outcome_store.OutcomeStore({str(tmp_path)!r})
names = _names(3)
cache.write(names[0], OUTCOMES[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (6000, hard))
try:
    cache.write(names[1], OUTCOMES[1])
except OSError as error:
    print("refused", error.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
cache.write(names[2], OUTCOMES[1])
cache.close()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("refused")
    reader = outcome_store.OutcomeStore(str(tmp_path))
    names = _names(3)
    assert reader.read(names[0])[0].examples == reader.read(names[2])[0].examples == OUTCOMES[1].examples
    assert len(list((tmp_path / outcome_store.SEGMENTS).glob("*.seg"))) == 2


def test_a_digest_is_recorded_only_for_one_settled_state_on_a_trusted_filesystem(tmp_path):
    trusted_device = os.stat(tmp_path).st_dev
    assert file_states.trusted(trusted_device), "the tests' folder lies on a trusted filesystem"
    cache = outcome_store.OutcomeStore(str(tmp_path))
    settled = _state(trusted_device)
    moved = (settled[0], settled[1], settled[2], settled[3] + 1, settled[4])  # another file at the path
    assert not cache.record_digest("/d/a", (settled, moved, moved), "a" * 64)  # swapped before the open
    assert not cache.record_digest("/d/a", (settled, settled, moved), "a" * 64)  # rewritten during the read
    assert not cache.record_digest("/d/a", (_state(trusted_device, 0.5),) * 3, "a" * 64)  # not settled
    assert not cache.record_digest("/d/a", (_state(os.stat("/proc/self").st_dev),) * 3, "a" * 64)  # proc
    assert cache.record_digest("/d/a", (settled,) * 3, "b" * 64)
    cache.close()
    assert outcome_store.OutcomeStore(str(tmp_path)).digests() == {"/d/a": {settled: "b" * 64}}


def test_a_damaged_digest_line_is_no_digest():
    line = outcome_store.digest_line("/d/a \"b\" é", (1, 2, 3, 4, 5), "c" * 64)
    assert outcome_store.read_digests(line) == [("/d/a \"b\" é", (1, 2, 3, 4, 5), "c" * 64)]
    assert outcome_store.read_digests(line.replace(" 3 ", " 9 ")) == []  # a time edited
    assert outcome_store.read_digests(line.replace("c" * 64, "d" * 64)) == []  # another digest
    assert outcome_store.read_digests(line[:-1]) == []  # cut short


def test_pruning_keeps_one_intact_copy_of_each_kept_entry_and_leaves_files_made_meanwhile(tmp_path):
    names = _names(4)
    first = outcome_store.OutcomeStore(str(tmp_path))
    for name in names:
        first.write(name, OUTCOMES[0])
    first.close()
    (segment,) = (tmp_path / outcome_store.SEGMENTS).glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[5] ^= 0xFF  # names[0]'s first copy damaged
    segment.write_bytes(bytes(data))
    second = outcome_store.OutcomeStore(str(tmp_path))
    second.write(names[0], OUTCOMES[1])  # an intact copy, elsewhere
    second.write(names[3], OUTCOMES[2])
    second.close()
    state = _state(os.stat(tmp_path).st_dev)
    for sha256 in ("a" * 64, "b" * 64):
        assert second.record_digest(f"/data/{sha256[0]}.jpg", (state,) * 3, sha256)
    second.close()
    listed = outcome_store.OutcomeStore(str(tmp_path))
    listed.entries()  # this process's view, before: it is dropped with the files
    counts = listed.prune({names[0], names[1], D(b"never written")}, {"a" * 64})
    assert counts == {"entries": 4, "entries_kept": 2, "digests": 2, "digests_kept": 1, "left": []}
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert sorted(reader.entries()) == sorted(names[:2])
    assert reader.read(names[0])[0].examples == OUTCOMES[1].examples
    assert reader.read(names[1])[0].examples == OUTCOMES[0].examples
    assert reader.digests() == {"/data/a.jpg": {state: "a" * 64}}
    assert len(list((tmp_path / outcome_store.SEGMENTS).iterdir())) == 3


def test_one_prune_at_a_time_and_the_kept_copies_on_disk_before_any_delete(tmp_path, monkeypatch):
    names = _names(2)
    store = _stored(tmp_path, names)
    lock = tmp_path / outcome_store.SEGMENTS / outcome_store.PRUNE_LOCK
    lock.write_text("{}")  # another prune's
    with pytest.raises(RuntimeError, match="another prune"):
        store.prune(set(names), set())
    assert sorted(store.entries()) == sorted(names)
    lock.unlink()
    events = []
    real_fsync, real_remove = os.fsync, os.remove
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "remove", lambda path: events.append(os.path.basename(path)) or real_remove(path))
    assert store.prune({names[0]}, set())["entries_kept"] == 1
    first_delete = next(i for i, e in enumerate(events) if e != "fsync")
    assert events[:first_delete] == ["fsync"] * 3  # the new segment, its index, their folder
    assert events[-1] == outcome_store.PRUNE_LOCK and not lock.exists()


def test_a_killed_prune_s_lock_is_broken_and_a_live_one_s_is_not(tmp_path):
    """A prune killed (its process gone from this host) left its lock: the next prune takes it
    over. One whose process runs, or whose lock cannot be read and is young, is another prune's."""
    names = _names(2)
    store = _stored(tmp_path, names)
    lock = tmp_path / outcome_store.SEGMENTS / outcome_store.PRUNE_LOCK
    ended = subprocess.Popen(["sleep", "0"])
    ended.wait()
    dead = dataclasses.replace(lease.this_process(local=True), pid=ended.pid)
    for holder, refused in ((lease.this_process(local=True), True), (dead, False)):
        lock.write_text(json.dumps(dataclasses.asdict(holder)))
        if refused:
            with pytest.raises(RuntimeError, match="another prune"):
                store.prune(set(names), set())
            assert json.loads(lock.read_text())["run_id"] == holder.run_id
        else:
            assert store.prune({names[0]}, set())["entries_kept"] == 1 and not lock.exists()


def test_only_the_files_its_writers_made_are_the_caches_to_read_or_prune(tmp_path):
    names = _names(2)
    _stored(tmp_path, names)
    folder = tmp_path / outcome_store.SEGMENTS
    writer = next(folder.glob("*.idx")).name[:-len(".idx")]
    # Not a writer's: other names with its suffixes, one of them an index naming its real segment.
    foreign = {"notes.dig": "mine\n", "train-00000-of-00001.tfrecord.idx": f"{names[0]} 0 3\n",
               f"{writer.upper()}.idx": f"{names[1]} 0 3\n", f"{writer}.idx.bak": "copy\n"}
    for name, text in foreign.items():
        (folder / name).write_text(text)
    assert [outcome_store.is_writer_file(name) for name in (f"{writer}.seg", f"{writer}.idx", f"{writer}.dig")] \
        == [True, True, True]
    assert not any(outcome_store.is_writer_file(name) for name in foreign)
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert {name: len(places) for name, places in reader.entries().items()} == {names[0]: 1, names[1]: 1}
    assert reader.prune({names[0]}, set())["entries"] == 2
    assert {path.name: path.read_text() for path in folder.iterdir() if path.name in foreign} == foreign
    assert sorted(outcome_store.OutcomeStore(str(tmp_path)).entries()) == [names[0]]


def test_files_pruned_while_a_reader_lists_them_are_no_entries_not_an_error(tmp_path):
    _stored(tmp_path, _names(1))
    folder = tmp_path / outcome_store.SEGMENTS
    listed = sorted(path.name for path in folder.iterdir())
    for path in folder.iterdir():
        path.unlink()  # as a prune deletes them, after the reader listed them
    known = outcome_store._Known(str(folder))  # pylint: disable=protected-access
    known.refresh(listed)
    assert known.entries == {} and known.digests == {}


def test_a_cache_folder_is_there_only_with_its_segments_folder(tmp_path):
    assert not outcome_store.OutcomeStore(str(tmp_path / "typo")).exists()
    assert not (tmp_path / "typo").exists()
    assert not outcome_store.OutcomeStore(str(tmp_path)).exists()
    assert _stored(tmp_path, _names(1)).exists()


def test_a_write_the_disk_refuses_names_the_file_and_keeps_what_was_written_before(tmp_path):
    """A full disk (here: a file size limit) fails a write with an error that names no file: the
    store's names the cache's file, and a reader finds the entries written before it intact."""
    names = _names(3)
    store = outcome_store.OutcomeStore(str(tmp_path))
    store.write(names[0], OUTCOMES[0])
    (segment,) = (tmp_path / outcome_store.SEGMENTS).glob("*.seg")
    with full_disk.files_at_most(segment.stat().st_size + 1000), pytest.raises(OSError) as refused:
        store.write(names[1], OUTCOMES[1])  # 5,000 bytes of example
    assert refused.value.errno == errno.EFBIG and refused.value.filename == str(segment)
    store.close()
    with full_disk.files_at_most(10**6):
        store.write(names[2], OUTCOMES[2])  # in new files
        store.close()
    reader = outcome_store.OutcomeStore(str(tmp_path))
    assert reader.read(names[0])[0].examples == OUTCOMES[0].examples
    assert reader.read(names[1])[0] is None and str(reader.read(names[2])[0].rejected) == str(OUTCOMES[2].rejected)
    reader.close()


def test_closing_a_writer_the_disk_refuses_names_the_file_and_closes_every_one(tmp_path):
    store = outcome_store.OutcomeStore(str(tmp_path))
    store.write(_names(1)[0], OUTCOMES[0])
    writer = store._own_writer()  # pylint: disable=protected-access
    files = dict(writer._files)  # pylint: disable=protected-access
    index = files[outcome_store.INDEX]
    index.write("x" * 5000)  # held in the file's buffer, written out at the close
    with full_disk.files_at_most(1000), pytest.raises(OSError) as refused:
        writer.close(sync=True)
    assert refused.value.errno == errno.EFBIG and refused.value.filename == index.name
    assert all(handle.closed for handle in files.values())
