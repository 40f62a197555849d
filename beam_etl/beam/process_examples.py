"""The Beam step around the per-example chain: takes each input's outcome from the cache of
outcomes, or reads the bytes and has :class:`beam_etl.beam.example_cache.Chain` make it, and
turns bad inputs into ``Rejection`` s. What an outcome holds is the chain's alone: this step
finds the bytes and the outcome, and changes neither (its code is not part of the version
outcomes are cached under)."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import threading

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_etl import code_version, file_states, lineage, regular_files
from beam_etl.beam import crash, example_cache, filesystem, job_progress, outcome_store
from beam_etl.config import JobConfig
from beam_etl.elements import RejectedInput, SourceRecord
from beam_etl.output_layout import cache_folder
from beam_etl.beam.rejections import SplitRejections

STATISTICS = "statistics"  # the tagged output of the examples' shares of the statistics
code_version.as_imported(code_version.CHAIN_ENTRIES)  # (the chain this process runs: imported above)


REMOTE_READ_TIMEOUT_S = 600.0  # a remote read that has not finished by then fails its step


class StoreReadError(OSError):
    """A remote read that failed for a fault not of the input: of the store (a 429 or 5xx answer
    after the storage client's own retries), of the network (a dropped or stalled connection), or
    of the job's credentials (a 401, a token that cannot be refreshed). It fails the step: the
    runner retries the bundle where it retries (Dataflow), and otherwise the run fails with the
    output untouched, its finished work kept in the cache for the next run. Recording such an
    input as rejected would drop it from the output for a fault that is not its own."""


# A store's answers that are the object's own: 4xx, but for the credentials (401), the request's
# time (408) and the store's rate (429).
_NOT_THE_OBJECT_S = (401, 408, 429)


def _of_the_input(error: BaseException) -> bool:
    """Whether a remote read's ``error`` is the object's own: it is not there (404, 410), this
    job may not read it (403), or the store refuses the request for it (another 4xx). Anything
    else (5xx, 429, the client's retries running out, the network, the credentials, an error of
    no known kind) is not."""
    if isinstance(error, (FileNotFoundError, PermissionError)):  # (a 404, as filesystem.read_bytes gives it)
        return True
    try:  # pylint: disable=import-outside-toplevel  # the [gcp] extra's client, loaded where gs:// is read
        from google.api_core.exceptions import GoogleAPICallError
    except ImportError:  # (a scheme of another store, without the [gcp] extra)
        return False
    code = error.code if isinstance(error, GoogleAPICallError) else None  # (an HTTP status)
    return isinstance(code, int) and 400 <= code < 500 and code not in _NOT_THE_OBJECT_S


def _regular_file_state(path: str, stage: str) -> tuple[int, ...]:
    """The state (:func:`beam_etl.file_states.file_state`) of a local regular file; anything else (a
    FIFO, a device, a folder) is refused from its ``stat``, without being opened: opening a FIFO
    blocks for ever."""
    try:
        stat_result = os.stat(path)
    except OSError as error:
        raise _local_read_refused(error, stage) from None
    if not stat.S_ISREG(stat_result.st_mode):
        raise RejectedInput(stage, "not_a_file",
                            f"not a regular file (file type {stat.filemode(stat_result.st_mode)[0]!r}); not opened")
    return file_states.file_state(stat_result)


def _read_local_in_states(path: str, stage: str) -> tuple[bytes, tuple[int, ...], tuple[int, ...]]:
    """A local file's bytes, and the states of the open file (``fstat``) as the read began and
    as it ended: what was read, whatever the path pointed at meanwhile (a FIFO put in its place
    since its ``stat`` is refused, never waited on)."""
    try:
        with regular_files.open_regular(path) as handle:
            opened = file_states.file_state(os.fstat(handle.fileno()))
            data = handle.read()
            read = file_states.file_state(os.fstat(handle.fileno()))
    except regular_files.NotRegularFileError as error:
        raise RejectedInput(stage, "not_a_file", f"not a regular file (file type {error.file_type!r}); not read") from None
    except OSError as error:
        raise _local_read_refused(error, stage) from None
    return data, opened, read


# A local read's failures that are of the process or the machine, not of the file: too many files
# open (in this process, or in the system), no memory left to the kernel.
_NOT_THE_FILES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def _local_read_refused(error: OSError, stage: str) -> Exception:
    """What a local read's ``error`` is: the input's rejection (the file is not there, this job
    may not read it, ...), or the error itself where the fault is not the file's, which fails the
    step: a rejection would stand in the output, and the next run of the same files would call
    it up to date."""
    if error.errno in _NOT_THE_FILES:
        return error
    return RejectedInput(stage, "unreadable", f"{type(error).__name__}: {error}")


def _read_local(uri: str, stage: str) -> bytes:
    """A local regular file's bytes (:func:`_regular_file_state`)."""
    path = filesystem.local_path(uri)
    _regular_file_state(path, stage)
    return _read_local_in_states(path, stage)[0]


def _read_remote(uri: str, stage: str, timeout_s: float) -> bytes:
    """Reads on a daemon thread and waits ``timeout_s`` for it: a stalled connection is given
    up (its thread is left to the client's own timeouts, and never holds the process's exit)."""
    outcome = {}

    def read():
        try:
            outcome["data"] = filesystem.read_bytes(uri)
        except Exception as error:  # pylint: disable=broad-except  # every backend has its own errors
            outcome["error"] = error

    reader = threading.Thread(target=read, name="beam_etl_read", daemon=True)
    reader.start()
    reader.join(timeout_s)
    if reader.is_alive():
        raise StoreReadError(f"{uri}: no complete read within {timeout_s:g} s; the run fails rather than "
                             "reject the input for a stalled connection")
    if "error" in outcome:
        error = outcome["error"]
        if not _of_the_input(error):
            raise StoreReadError(f"{uri}: {type(error).__name__}: {error} (after the storage client's retries); "
                                 "the run fails rather than reject the input for a fault that is not its own "
                                 "(of the store, the network or the job's credentials)") from error
        raise RejectedInput(stage, "unreadable", f"{type(error).__name__}: {error}")
    return outcome["data"]


def read_uri(uri: str | None, stage: str, timeout_s: float = REMOTE_READ_TIMEOUT_S) -> bytes:
    """The whole file at ``uri`` (any FileSystems scheme); a missing or unreadable file is a
    rejection. A remote read that fails for a fault not of the input, or takes longer than
    ``timeout_s`` (a stalled connection must not hang the job), raises :class:`StoreReadError`."""
    if uri is None:
        raise RejectedInput(stage, "missing_file", "no URI given")
    if filesystem.is_local(uri):
        return _read_local(uri, stage)
    return _read_remote(uri, stage, timeout_s)


@dataclasses.dataclass
class _InputFile:
    """An image or mask of a record: its SHA-256, and its bytes once read. A local file whose
    state the cache has a digest for is not read unless its outcome must be computed."""

    uri: str | None
    stage: str
    digest: str = ""
    data: bytes | None = None

    def read(self) -> None:
        self.data = read_uri(self.uri, self.stage)
        self.digest = example_cache.digest(self.data)


class ProcessExamplesFn(beam.DoFn):
    """``SourceRecord`` -> ``EncodedExample`` (1 + augmentation copies, the original carrying the
    input's ``lineage.Entry``), or a ``Rejection``; a training original's share of the
    statistics on the :data:`STATISTICS` output."""

    def __init__(self, config: JobConfig, chain_code: dict[str, str]):
        self._config = config
        self._chain_code = chain_code

    def setup(self):
        config = self._config
        stale = code_version.stale(self._chain_code, code_version.CHAIN_ENTRIES)
        if stale:  # its outcomes would be cached, and described, as another code's
            raise RuntimeError(code_version.stale_message("per-image", stale))
        self._cache = None
        if config.use_cache:
            self._cache = outcome_store.OutcomeStore(cache_folder(config.output, config.cache_dir))
        self._chains = {split: example_cache.Chain.of(config, split, self._chain_code) for split in config.splits}
        self._cached = {name: Metrics.counter("beam_etl", f"cache_{name}") for name in ("hits", "misses", "damaged")}
        self._inputs = Metrics.counter("beam_etl", "inputs")
        self._written = {split: Metrics.counter("beam_etl", f"written_{split}")
                         for split in self._config.splits}
        self._rejected = {}
        self._computed = 0  # outcomes this instance computed and cached (for beam_etl.beam.crash)
        self._progress = job_progress.Reporter(config.output)

    def process(self, record: SourceRecord):
        self._inputs.inc()
        self._progress.add()
        split = record.split  # the output split: ReadSources decided it
        try:
            image = self._input(record.image_bytes, record.image_uri, "read_image")
            mask = self._input(record.mask_bytes, record.mask_uri, "read_mask")
            name, outcome, location = self._outcome(record, image, mask, split)
        except RejectedInput as rejected:  # no outcome of the input's bytes: never cached
            yield self._rejection(record, rejected)
            return
        if outcome.rejected is not None:
            yield self._rejection(record, outcome.rejected)
            return
        examples, sums = outcome.examples, outcome.sums
        self._written[split].inc(len(examples))
        entry = lineage.Entry(
            key=record.key, split=split, image_uri=record.image_uri, mask_uri=record.mask_uri,
            image_sha256=image.digest, mask_sha256=mask.digest, outcome=name,
            records_sha256=lineage.records_digest(examples), example_keys=tuple(example.example_key for example in examples))
        # Each example says where its bytes are in the cache's entry (the sink then writes them
        # no second time); the original carries the input's line to the shard writer.
        places = outcome_store.example_places(location, outcome) if location is not None else [None] * len(examples)
        for example, place in zip(examples, places):
            yield dataclasses.replace(example, stored=place, lineage=entry if example.copy == 0 else None)
        if sums is not None:
            yield beam.pvalue.TaggedOutput(STATISTICS, sums)

    def finish_bundle(self):
        if self._cache is not None:
            self._cache.finish_bundle()
        # (Never later, in teardown: that may come after the commit has cleared .incomplete/.)
        self._progress.bundle_done()

    def teardown(self):
        if getattr(self, "_cache", None) is not None:
            self._cache.close()

    def _input(self, given: bytes | None, uri: str | None, stage: str) -> _InputFile:
        """The file at ``uri`` (or the bytes a source ``given``), hashed; a local file's digest
        comes from the cache when its state is the one recorded, and is recorded when the file
        has settled."""
        input_file = _InputFile(uri, stage)
        if given is not None:
            input_file.data, input_file.digest = given, example_cache.digest(given)
            return input_file
        if self._cache is None or uri is None or not filesystem.is_local(uri):
            input_file.read()
            return input_file
        path = filesystem.local_path(uri)
        state = _regular_file_state(path, stage)
        known = self._cache.known_digest(path, state)
        if known is not None:
            input_file.digest = known
            return input_file
        input_file.data, opened, read = _read_local_in_states(path, stage)
        input_file.digest = example_cache.digest(input_file.data)
        # (the path's state at the lookup, and the open file's throughout the read: the bytes
        # are that state's, wherever the path points later)
        self._cache.record_digest(path, (state, opened, read), input_file.digest)
        return input_file

    def _outcome(self, record, image: _InputFile, mask: _InputFile,
                 split) -> tuple[str, example_cache.Outcome, outcome_store.Location | None]:
        """The input's entry name and outcome, from the cache or computed (and cached), and
        where its entry is (None without one); raises RejectedInput when a file that must be read
        now cannot be."""
        chain = self._chains[split]
        name = chain.entry_name(record, image.digest, mask.digest)
        if self._cache is None:
            return name, chain.compute(record, image.data, mask.data), None
        outcome, damaged, location = self._cache.read_located(name)
        if outcome is None and (image.data is None or mask.data is None):
            for input_file in (image, mask):  # known by their state only: read them now
                if input_file.data is None:
                    input_file.read()
            read_name = chain.entry_name(record, image.digest, mask.digest)
            if read_name != name:  # (a digest recorded wrongly: the bytes decide)
                name = read_name
                outcome, damaged, location = self._cache.read_located(name)
        if outcome is not None:
            self._cached["hits"].inc()
            return name, outcome, location
        self._cached["damaged" if damaged else "misses"].inc()
        outcome = chain.compute(record, image.data, mask.data)
        location = self._cache.write(name, outcome)
        self._computed += 1
        crash.crash_point("outcomes", self._computed)
        return name, outcome, location

    def _rejection(self, record, rejected: RejectedInput):
        if rejected.reason not in self._rejected:
            self._rejected[rejected.reason] = Metrics.counter("beam_etl", f"rejected_{rejected.reason}")
        self._rejected[rejected.reason].inc()
        uri = record.mask_uri if rejected.of_mask else record.image_uri
        return rejected.to_rejection(uri, record.key)


class ProcessExamples(beam.PTransform):
    """Decode, validate, resize, augment and serialize; returns ``(examples, rejected, sums)``:
    ``sums`` the training originals' shares of the statistics (none with --no_statistics); each
    original example carries its input's line of the lineage index."""

    def __init__(self, config: JobConfig, chain_code: dict[str, str]):
        super().__init__()
        self._config = config
        self._chain_code = chain_code

    def expand(self, records):
        step = ProcessExamplesFn(self._config, self._chain_code)
        processed = records | "DecodeResizeEncode" >> beam.ParDo(step).with_outputs(STATISTICS, main="examples")
        examples, rejected = processed.examples | "SplitRejections" >> SplitRejections()  # EncodedExample | Rejection
        return examples, rejected, processed[STATISTICS]
