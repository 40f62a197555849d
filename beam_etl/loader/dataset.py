"""The tf.data loader that feeds the job's shards to a model (its command line:
:mod:`beam_etl.loader.cli`).

:func:`make_dataset` reads everything from ``OUT/manifest.json`` (file list, image size and
formats, feature schema) and, unless the job ran with ``--no_statistics``, applies the job's
tf.Transform graph (``OUT/transform_fn``), so training and serving normalize the same way.
The pipeline: file list (shuffled with the seed) -> parallel ``interleave`` of TFRecord
readers -> optional cache of the serialized records -> shuffle buffer -> batch -> parse and
decode the whole batch at once -> transform -> optional stateless flip -> prefetch.
With ``normalize_on_device`` the pipeline stops at uint8 pixels and compact class ids, and the
graph's normalization runs in the model instead (:func:`normalization_layer`), on the
accelerator: twice the images/s on the host, a quarter of the bytes to the device.

The manifest is the truth: every file's size is checked against it when the dataset is made
(:func:`check_files`), a file that holds more or fewer records than it lists raises as its
records are read, naming the file, and a file is opened, every epoch, only while the manifest
is the one the dataset was made from. Records that fail to parse raise an error naming their file:
each record travels with its file name into ``tf.io.parse_example(example_names=...)``, whose
errors quote it. (A TFRecord file whose framing is corrupt in place, same size, fails inside
TensorFlow's reader, which reports the byte offset but not the file; the command line then
checks every checksum and names it, as ``python -m beam_etl.loader.verify OUT`` does.)
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import tensorflow as tf

from beam_etl import schema
from beam_etl.manifest_checks import manifest_problems, split_problems
from beam_etl.loader import tf_decoding, transform_graph
from beam_etl.loader.listed_files import (OutputMismatchError, check_graph_files, first_record, lists_files,
                                          record_problem)
from beam_etl.output_layout import (MANIFEST, is_local, is_regular, missing_manifest, parse_manifest,
                                    refuse_unless_regular)

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 2048  # examples; 2048 raw 128x128 records are ~100 MB
_REMOTE_READ_BUFFER = 8 << 20  # 8 MB per file reader: few, large reads (what GCS wants)


def read_buffer_size(path: str) -> int:
    """``TFRecordDataset``'s ``buffer_size`` for ``path``: 8 MB for remote file systems
    (``gs://``: few, large requests); none for local files, whose reader then reads each record
    straight into its tensor (one copy less: 1.4-1.5x the records/s here, BENCHMARKS.md)."""
    return _REMOTE_READ_BUFFER if "://" in path and not path.startswith("file://") else 0


def _manifest_bytes(data_dir: str) -> bytes:
    path = f"{data_dir.rstrip('/')}/{MANIFEST}"
    if not tf.io.gfile.exists(path):
        raise missing_manifest(path, data_dir)
    refuse_unless_regular(path)
    with tf.io.gfile.GFile(path, "rb") as handle:
        return handle.read()


def load_manifest(data_dir: str) -> dict:
    """``data_dir/manifest.json`` through TensorFlow's file systems (local, ``gs://``)."""
    return parse_manifest(_manifest_bytes(data_dir), f"{data_dir.rstrip('/')}/{MANIFEST}")


def split_files(data_dir: str, manifest: dict, split: str) -> list[str]:
    """The paths of ``split`` 's shards; ValueError for a split that is not there or is empty,
    OutputMismatchError for one that contradicts the rest of the manifest."""
    if split not in manifest["splits"]:
        raise ValueError(f"split {split!r} is not in {data_dir}; it has {sorted(manifest['splits'])}")
    # the split's contradictions first (the most precise), then its list of files, then the rest
    # of what it says of itself, the records' size and encoding among it
    problems = split_problems(manifest, split)
    if not problems and lists_files(manifest):
        problems = manifest_problems(manifest)
    if problems:
        raise OutputMismatchError(f"{data_dir.rstrip('/')}/{MANIFEST}: {problems[0]}: it was edited")
    files = [f"{data_dir.rstrip('/')}/{name}" for name in manifest["splits"][split]["files"]]
    if not manifest["splits"][split]["num_examples"]:
        raise ValueError(f"split {split!r} of {data_dir} has no examples")
    return files


def check_files(data_dir: str, manifest: dict, names: list[str]) -> list[int | None]:
    """Checks that each of ``names`` has the size the manifest lists; returns each file's listed
    record count (None for outputs whose manifest predates per-file entries)."""
    if not lists_files(manifest):
        return [None] * len(names)
    listed = manifest["files"]
    counts = []
    for name in names:
        path = f"{data_dir.rstrip('/')}/{name}"
        entry = listed.get(name)
        if entry is None:
            raise OutputMismatchError(f"{path}: the manifest's split lists it, but its files do not")
        try:
            size = tf.io.gfile.stat(path).length
            regular = not is_local(path) or is_regular(path)
        except (tf.errors.NotFoundError, FileNotFoundError):
            raise OutputMismatchError(f"{path} is missing: the manifest lists it") from None
        if not regular:  # (a FIFO has the size of an empty shard, and a reader would wait on it for ever)
            raise OutputMismatchError(f"{path} is not a regular file; not opened")
        if size != entry["bytes"]:
            raise OutputMismatchError(f"{path} holds {size} bytes, but the manifest lists "
                                      f"{entry['bytes']}: it was cut short, extended or replaced")
        counts.append(entry["num_examples"])
    return counts


def check_first_record(files: list[str], counts: list[int | None], image_info: dict) -> None:
    """Checks the first record of the first of ``files`` that holds one against the manifest's
    ``image`` (size, channels, encoding: every record is decoded by it, raw pixels reshaped to
    it), its framing's checksums first; raises OutputMismatchError naming the file. One small
    read. (``counts`` None: a manifest that predates them; an empty file is passed over.)"""
    for path, count in zip(files, counts):
        if count == 0:
            continue
        try:
            record = first_record(path, tf.io.gfile.stat(path).length)
        except ValueError as error:
            raise OutputMismatchError(f"{path}: {error}; `beam-etl verify` checks every file") from None
        if record is None:
            continue
        problem = record_problem(record, image_info)
        if problem:
            raise OutputMismatchError(f"{path}: {problem}")
        return


_COUNT_BATCH = 128  # records of a file handled together by the count check


def _counted(records: tf.data.Dataset, name, count) -> tf.data.Dataset:
    """``records`` of file ``name`` as ``(record, name, False)``, raising (naming the file) when
    the file holds more or fewer than ``count`` records (None: no check).

    The check runs on batches of one file's records, and an empty batch appended at the end
    marks where the file ends: one function call per 128 records, then ``unbatch``. (Checking
    record by record, with a scan and a filter, halved the loader's images/s; this is faster
    than the one ``map`` per record it replaced, BENCHMARKS.md.)
    """
    batches = records.batch(_COUNT_BATCH).concatenate(
        tf.data.Dataset.from_tensors(tf.zeros([0], tf.string)))

    def step(seen, batch):
        size = tf.cast(tf.size(batch), tf.int64)
        outputs = (batch, tf.fill(tf.shape(batch), name), tf.zeros(tf.shape(batch), tf.bool))
        if count is None:
            return seen + size, outputs
        at_end = tf.equal(size, 0)
        check = tf.debugging.Assert(
            tf.where(at_end, tf.equal(seen, count), tf.less_equal(seen + size, count)),
            ["the file", name, "does not hold the number of records its manifest lists:", count,
             "records; records read before the mismatch:", seen])
        with tf.control_dependencies([check]):
            return seen + size, outputs

    return batches.scan(tf.constant(0, tf.int64), step).unbatch()


class Decoder:
    """Parsed raw features (a batch) -> ``(image, mask)``.

    By default ``(image float32[B,H,W,3], mask int32[B,H,W])``: with statistics, the job's
    tf.Transform graph; without (``--no_statistics``), pixels scaled to [0, 1] and masks as
    their stored values.

    ``on_device=True``: ``image`` stays ``uint8`` and the model normalizes it on the
    accelerator with :func:`normalization_layer` (4x fewer bytes to the device and no float
    pass on the host); ``mask`` is the same class ids as the graph's, in the smallest type that
    holds them (:func:`mask_dtype`), or the stored ``uint8`` values without transform_graph.
    ``split``: the split it decodes; where the job guarantees that its masks hold only class
    values (:func:`transform_graph.masks_hold_only_classes`), a contiguous label set's ids are one
    subtraction, with no check for values that are not a class.
    """

    def __init__(self, data_dir: str, manifest: dict, on_device: bool = False, split: str | None = None):
        self.image_info = manifest["image"]
        self.on_device = on_device
        self._transform = self._class_ids = None
        self._only_classes = split is not None and transform_graph.masks_hold_only_classes(manifest, split)
        self.features = (schema.IMAGE_ENCODED, schema.MASK_ENCODED)  # what to parse
        if manifest.get("statistics") is None:
            return
        check_graph_files(data_dir, manifest)
        if on_device:  # the graph's own table, read out of it once
            self._class_ids = transform_graph.graph_statistics(data_dir, self.image_info)["class_ids"]
        else:
            import tensorflow_transform as tft  # pylint: disable=import-outside-toplevel
            self._transform = tft.TFTransformOutput(data_dir).transform_features_layer()
            self.features = transform_graph.RAW_FEATURES

    def __call__(self, features: dict, batch_size: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        if self._transform is not None:
            outputs = self._transform(features)
            image, mask = outputs[transform_graph.IMAGE], tf.cast(outputs[transform_graph.MASK], tf.int32)
        else:
            image = tf_decoding.decode_images(features[schema.IMAGE_ENCODED], self.image_info)
            mask = tf_decoding.decode_masks(features[schema.MASK_ENCODED], self.image_info)
            if not self.on_device:
                image, mask = tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.int32)
                ignored = self.image_info.get("mask_ignore_value")
                if ignored is not None:  # --resize pad's padding: the ignore id, as the graph gives it
                    mask = tf.where(mask == ignored, tf.constant(-1, tf.int32), mask)
            elif self._class_ids is not None:
                mask = transform_graph.class_ids_of(mask, tf.constant(self._class_ids), mask_dtype(self._class_ids),
                                               only_classes=self._only_classes)
            elif self.image_info.get("mask_ignore_value") is not None:  # stored values, padding -1: int16
                mask = tf.where(mask == self.image_info["mask_ignore_value"], tf.constant(-1, tf.int16),
                                tf.cast(mask, tf.int16))
        height, width, channels = (self.image_info[k] for k in ("height", "width", "channels"))
        return (tf.ensure_shape(image, [batch_size, height, width, channels]),
                tf.ensure_shape(mask, [batch_size, height, width]))


def mask_dtype(class_ids: np.ndarray) -> tf.DType:
    """int8 for up to 128 classes (ids 0..127 and -1), else int16: the on-device mask type."""
    return tf.int8 if class_ids.max() < 128 else tf.int16


def normalization_layer(data_dir: str):
    """``keras.layers.Rescaling`` that turns the loader's ``uint8`` images (``normalize_on_device``)
    into exactly what the transform graph makes of them: ``x * scale + offset`` per channel with
    the graph's own factors (``1/std`` and ``-mean/std``; ``1/255`` and 0 without statistics).
    Put it first in the model, so it runs on the accelerator, fused with what follows.
    """
    import keras  # pylint: disable=import-outside-toplevel

    manifest = load_manifest(data_dir)
    if manifest.get("statistics") is None:
        return keras.layers.Rescaling(1.0 / 255.0, name="normalize")
    check_graph_files(data_dir, manifest)
    raw = transform_graph.graph_statistics(data_dir, manifest["image"])
    return keras.layers.Rescaling(raw["pixel_scale"].tolist(), raw["pixel_offset"].tolist(), name="normalize")


def denormalize(image: np.ndarray, stats: dict | None) -> np.ndarray:
    """What :class:`Decoder` made of the pixels, back to uint8 (for pictures); ``stats`` is the
    manifest's ``statistics`` (None: images were scaled to [0, 1])."""
    if image.dtype == np.uint8:  # on_device: not normalized yet
        return image
    if stats is None:
        pixels = image * 255.0
    else:
        pixels = image * np.array(stats["pixel_std"]) + np.array(stats["pixel_mean"])
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def share_files(counts: list[int | None], workers: int) -> list[list[int]] | None:
    """Which files (indices into ``counts``, each file's records) each of ``workers`` input
    pipelines reads, every file by one: the largest first, each to the pipeline that holds the
    fewest records so far (the lowest-numbered of those), so that their shares of an epoch are as
    even as the files allow; by position where the counts are not known (manifests that predate
    them). None where there are fewer files holding records than pipelines: the pipelines then
    read every file and share the split's records instead (a pipeline without a file of records
    would end its epochs at once)."""
    if sum(1 for count in counts if count != 0) < workers:
        return None
    if any(count is None for count in counts):
        return [list(range(index, len(counts), workers)) for index in range(workers)]
    shares: list[list[int]] = [[] for _ in range(workers)]
    held = [0] * workers
    for file in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        fewest = min(range(workers), key=lambda w: (held[w], w))
        shares[fewest].append(file)
        held[fewest] += counts[file]
    return [sorted(share) for share in shares]


def _cache_file(cache: str, manifest: dict, split: str, input_context) -> str:
    """The file ``make_dataset(cache=...)`` caches the records in: one per version of the
    output (its run), split and input pipeline. (tf.data reads an existing cache file whatever
    made it: one file for two splits would give the second the first's records.)"""
    pipeline = (f".{input_context.input_pipeline_id}-of-{input_context.num_input_pipelines}"
                if input_context is not None else "")
    return f"{cache}.{manifest.get('run_id', 'unversioned')}.{split}{pipeline}"


def _flip(seed: int):
    """Stateless random left-right flip of each example, the same on image and mask, from the
    ``seed`` and the batch's own (``tf.data.Dataset.random``'s, of the same ``seed``)."""

    def flip(batch_seed, image, mask):
        coin = tf.random.stateless_uniform([tf.shape(image)[0]],
                                           seed=tf.stack([tf.constant(seed, tf.int64), batch_seed]))
        do_flip = coin < 0.5
        image = tf.where(do_flip[:, None, None, None], tf.reverse(image, axis=[2]), image)
        mask = tf.where(do_flip[:, None, None], tf.reverse(mask, axis=[2]), mask)
        return image, mask

    return flip


def _this_pipeline_s(files: list[str], counts: list, input_context: tf.distribute.InputContext, split_named: str):
    """``(files, counts, record_shard)`` of this input pipeline: its share of the files
    (:func:`share_files`), or, where too few files hold records to share them out, every file
    and ``record_shard`` ``(pipelines, index)``: it keeps the records whose place in the split is
    its index modulo their number."""
    workers, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    shares = share_files(counts, workers)
    if shares is not None:
        return [files[i] for i in shares[index]], [counts[i] for i in shares[index]], None
    if counts[0] is not None and sum(counts) < workers:
        raise ValueError(f"{split_named} holds {sum(counts)} examples, fewer than the {workers} input "
                         "pipelines: a pipeline without one would end every epoch at once")
    return files, counts, (workers, index)


def _file_reader(data_dir: str, pinned: bytes, checked: bool, record_shard: tuple[int, int] | None):
    """``(file name, records listed, first record's place) -> records``: the file's records,
    counted against the manifest where ``checked``, and (``record_shard``) this pipeline's of them;
    each file is opened only while the manifest is still ``pinned``, the version the dataset was made of."""
    buffer_size = read_buffer_size(data_dir)
    manifest_path = f"{data_dir.rstrip('/')}/{MANIFEST}"

    def read_file(name, count, offset):
        # The manifest's path made from the file's name (and nothing of it): with a constant path,
        # TensorFlow's constant folding reads the manifest once, when an iterator starts, and a
        # repeating dataset would read a version that replaced this one from its second epoch on.
        path = tf.strings.join([manifest_path, tf.strings.substr(name, 0, 0)])
        unchanged = tf.debugging.Assert(  # (another run's commit moves the manifest out first)
            tf.equal(tf.io.read_file(path), pinned),
            [f"{data_dir} was replaced while it was read (its {MANIFEST} changed since the dataset was "
             "made): make the dataset again to read the new version; not opened:", name])
        with tf.control_dependencies([unchanged]):
            name = tf.identity(name)
        records = _counted(tf.data.TFRecordDataset(name, buffer_size=buffer_size), name,
                           tf.cast(count, tf.int64) if checked else None)
        if record_shard is None:
            return records
        workers, index = record_shard
        if not checked:  # (no counts, no places: each file's records shared out by themselves)
            return records.shard(workers, index)
        return (records.enumerate()
                .filter(lambda place, _: tf.equal((tf.cast(offset, tf.int64) + place) % workers, index))
                .map(lambda _, element: element))

    return read_file


def make_dataset(data_dir: str, split: str = "train", batch_size: int = 64, *, shuffle: bool = True,
                 repeat: bool = False, augment: bool = False, cache: bool | str = False,
                 deterministic: bool = False, seed: int = 0,
                 input_context: tf.distribute.InputContext | None = None,
                 drop_remainder: bool = False, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                 data_service_address: str | None = None,
                 normalize_on_device: bool = False) -> tf.data.Dataset:
    """``(image, mask)`` batches of ``split`` in ``data_dir``, ready for ``model.fit``.

    ``batch_size`` is the global batch: with an ``input_context`` (from
    ``strategy.distribute_datasets_from_function``) each input pipeline makes batches of
    ``input_context.get_per_replica_batch_size(batch_size)`` from its own share of the files
    (:func:`share_files`), so that every example is seen exactly once per epoch across workers. ``drop_remainder``
    gives static batch shapes (TPUs). ``cache``: True keeps the serialized records in memory,
    a string caches them in files named from it, the output's run and the split (a cache of
    another version or split is never read back). ``deterministic`` with a ``seed`` gives the
    same order every time. ``data_service_address`` (``grpc://host:port`` of a tf.data service dispatcher)
    runs the pipeline on the service's workers, each file handed to one worker per epoch.
    ``normalize_on_device``: images come as ``uint8`` and masks as compact class ids (see
    :class:`Decoder`); the model starts with :func:`normalization_layer`. Twice the images/s on
    the host, and a quarter of the bytes to the accelerator.
    """
    if "://" not in data_dir:  # (every file is opened as the dataset is read: after a chdir, perhaps)
        data_dir = os.path.abspath(data_dir)
    pinned = _manifest_bytes(data_dir)  # the version read: a file opened later must be of it
    manifest = parse_manifest(pinned, f"{data_dir.rstrip('/')}/{MANIFEST}")
    files = split_files(data_dir, manifest, split)
    counts = check_files(data_dir, manifest, manifest["splits"][split]["files"])
    check_first_record(files, counts, manifest["image"])
    decoder = Decoder(data_dir, manifest, on_device=normalize_on_device, split=split)
    raw_spec = {key: spec for key, spec in schema.feature_spec(manifest["features"]).items()
                if key in decoder.features}

    checked = counts[0] is not None
    record_shard = None  # (count, index): this pipeline's records of every file
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        files, counts, record_shard = _this_pipeline_s(files, counts, input_context, f"split {split!r} of {data_dir}")

    # Each file's first record's place in the split, in the manifest's order: where the pipelines
    # share records, pipeline i keeps the records whose place is i modulo their number, so that
    # each has its even share of the split (per file, a pipeline past a file's count would get none).
    offsets = [0, *itertools.accumulate(count or 0 for count in counts)][:len(counts)]
    file_names = tf.data.Dataset.from_tensor_slices(
        (files, [count or 0 for count in counts], offsets))  # (path, records listed, first record's place)
    if shuffle:
        file_names = file_names.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    read_file = _file_reader(data_dir, pinned, checked, record_shard)
    dataset = file_names.interleave(read_file, cycle_length=min(len(files), 16), block_length=1,
                                    num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    # (serialized record, file name, False)
    if cache:
        dataset = dataset.cache(_cache_file(cache, manifest, split, input_context) if isinstance(cache, str) else "")
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    # batched in parallel: faster here than in the parse's input thread (BENCHMARKS.md)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                            deterministic=deterministic)

    def parse_and_decode(records, names, _):
        features = tf.io.parse_example(records, raw_spec, example_names=names)
        return decoder(features, records.shape[0])  # static with drop_remainder

    dataset = dataset.map(parse_and_decode, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if augment:  # each batch its own coin seed, drawn anew each pass over the dataset (epochs without repeat)
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        dataset = tf.data.Dataset.zip(coins, dataset).map(lambda coin, batch: _flip(seed)(coin, *batch),
                                                          num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    if input_context is not None:  # sharded above; tf.distribute must not shard again
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = dataset.with_options(options)
    if data_service_address:
        dataset = dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=data_service_address))  # a job of its own (a job named, say by split, was
            # joined by every later dataset of that split: one made after it ended read nothing)
    return dataset.prefetch(AUTOTUNE)


def distribute(strategy: tf.distribute.Strategy, data_dir: str, split: str, batch_size: int, **kwargs):
    """The loader under ``strategy``: one input pipeline per worker, sharded by file."""
    return strategy.distribute_datasets_from_function(
        lambda context: make_dataset(data_dir, split, batch_size, input_context=context, **kwargs))
