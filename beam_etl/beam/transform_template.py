"""The transform graph's files for one record format, written by tf.Transform once per machine
and copied into each run's output beside that run's statistics.

The graph (:func:`beam_etl.loader.transform_graph.make_preprocessing_fn`) reads its statistics
from two assets, so its SavedModel is the same for every run with the same record format,
``--mask_values`` and versions of TensorFlow, tf.Transform and the graph's code. The first run
that needs one writes it with ``tft_beam.AnalyzeDataset`` + ``WriteTransformFn`` (a pipeline of
one placeholder record, on the in-process DirectRunner: the graph has no analyzers) into the
cache folder (:func:`cache_root`), with a checksum of every file; later runs copy the files and
write their own assets, without importing TensorFlow. A cached template whose files do not
match their checksums is written anew; a cache folder that cannot be written is no error (the
template is then written for this run only).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import uuid

import google_crc32c

from beam_etl import metadata_schema, schema
from beam_etl.code_version import as_imported
from beam_etl.beam import filesystem
from beam_etl.image import pixel_statistics
from beam_etl.loader import transform_graph
from beam_etl.output_layout import TRANSFORM_DIRS, join

CHECKSUMS = "checksums.json"  # a template's files, with their crc32c
ASSET_MAP = "transformed_metadata/asset_map"
_SCRATCH_PREFIX = "beam_etl_template_"  # a template built in the temporary folder (the cache not writable)
# The code that makes a template: its source, and that of every module of the job it imports
# (read from the files, without importing them: tf_decoding imports TensorFlow), is part of the
# template's key.
GRAPH_ENTRIES = (__name__, "beam_etl.loader.transform_graph", "beam_etl.loader.tf_decoding")
as_imported(GRAPH_ENTRIES)  # (the code this process writes templates with: a long-lived worker keeps it)


def cache_root() -> str:
    """``$BEAM_ETL_CACHE_DIR``, else ``$XDG_CACHE_HOME/beam-etl``, else ``~/.cache/beam-etl``."""
    if os.environ.get("BEAM_ETL_CACHE_DIR"):
        return os.environ["BEAM_ETL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "beam-etl")


def template_key(image_info: dict, mask_values) -> str:
    """What the graph's files depend on, hashed."""
    described = {
        "image": {k: image_info[k] for k in ("height", "width", "channels", "format", "mask_format")},
        "mask_values": list(mask_values) if mask_values is not None else None,
        "versions": {name: importlib.metadata.version(name) for name in ("tensorflow", "tensorflow-transform")},
        "code": as_imported(GRAPH_ENTRIES),  # (the code that writes it, whatever the files hold now)
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def _crc32c(path: str) -> str:
    with open(path, "rb") as handle:
        return f"{google_crc32c.value(handle.read()):08x}"


def _files(directory: str) -> list[str]:
    return [name for name in filesystem.list_files(directory) if name != CHECKSUMS]


def _is_intact(directory: str) -> bool:
    try:
        with open(os.path.join(directory, CHECKSUMS), encoding="utf-8") as handle:
            expected = json.load(handle)
        return expected == {name: _crc32c(os.path.join(directory, name)) for name in _files(directory)}
    except (OSError, ValueError):
        return False


def placeholder_record(image_info: dict) -> bytes:
    """A serialized record of :func:`~beam_etl.loader.transform_graph.probe_features`: what
    tf.Transform traces the graph with."""
    features = transform_graph.probe_features(image_info)
    return schema.build_example(
        image=features[schema.IMAGE_ENCODED][0], image_format=image_info["format"],
        height=image_info["height"], width=image_info["width"], filename="", source_id="",
        mask=features[schema.MASK_ENCODED][0], mask_format=image_info["mask_format"], label=-1,
        label_name="")


def write_template(directory: str, image_info: dict, mask_values) -> None:
    """tf.Transform's ``transform_fn/`` and ``transformed_metadata/`` of the graph, with
    placeholder assets, and :data:`CHECKSUMS`, in ``directory`` (which must not exist)."""
    # pylint: disable=import-outside-toplevel  # TensorFlow and tf.Transform: only here
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from tfx_bsl.public import tfxio

    with tempfile.TemporaryDirectory(prefix="beam_etl_transform_") as scratch:
        statistics_file = os.path.join(scratch, transform_graph.STATISTICS)
        class_names_file = os.path.join(scratch, transform_graph.CLASS_NAMES)
        empty = transform_graph.raw_statistics(pixel_statistics.Totals(), mask_values, image_info["channels"])
        with open(statistics_file, "w", encoding="utf-8") as handle:
            handle.write(transform_graph.statistics_lines(empty, image_info["channels"]))
        with open(class_names_file, "w", encoding="utf-8") as handle:
            handle.write(transform_graph.vocabulary_lines([]))
        record_source = tfxio.TFExampleBeamRecord(
            physical_format="inmem", telemetry_descriptors=["beam_etl"],
            # every feature of the records, as metadata/schema.pbtxt says: the graph's input
            # signature is then the raw schema, as TFX trainers that parse with it expect
            schema=metadata_schema.records_schema(image_info, mask_values))
        preprocessing_fn = transform_graph.make_preprocessing_fn(image_info, statistics_file, class_names_file)
        # In this process, on the FnApiRunner (Beam's DirectRunner would first try its PrismRunner,
        # downloaded from GitHub, and leave folders in the temporary folder where that fails).
        options = PipelineOptions(flags=[], direct_running_mode="in_memory")
        with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline, \
                tft_beam.Context(temp_dir=os.path.join(scratch, "tft")):
            record_batches = (pipeline
                              | "OneRecord" >> beam.Create([placeholder_record(image_info)])
                              | "ToRecordBatches" >> record_source.BeamSource(batch_size=1))
            transform_fn = ((record_batches, record_source.TensorAdapterConfig())
                            | "AnalyzeDataset" >> tft_beam.AnalyzeDataset(preprocessing_fn))
            _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(directory)
    checksums = {name: _crc32c(os.path.join(directory, name)) for name in _files(directory)}
    with open(os.path.join(directory, CHECKSUMS), "w", encoding="utf-8") as handle:
        json.dump(checksums, handle, indent=1, sort_keys=True)


def template(image_info: dict, mask_values, root: str | None = None) -> str:
    """The folder of the template for this record format, written first if the cache has no
    intact one. Falls back to a fresh temporary folder when ``root`` cannot be written, which
    the caller removes once it has read it (:func:`remove_if_scratch`)."""
    root = root or cache_root()
    folder = os.path.join(root, "transform-graphs", template_key(image_info, mask_values))
    if _is_intact(folder):
        return folder
    try:
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        building = f"{folder}.{uuid.uuid4().hex}.partial"
    except OSError:
        building = os.path.join(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX), "template")
    write_template(building, image_info, mask_values)
    if not building.endswith(".partial"):
        return building
    # Another run may have put an intact one in place meanwhile, and may be copying from it:
    # a folder is only ever moved aside whole, and only when it is damaged.
    if not _is_intact(folder):
        aside = f"{folder}.{uuid.uuid4().hex}.damaged"
        try:
            os.rename(folder, aside)
            shutil.rmtree(aside, ignore_errors=True)
        except OSError:
            pass  # none there, or another run moved it first
        try:
            os.rename(building, folder)
            return folder
        except OSError:
            pass  # another run's went in first
    shutil.rmtree(building, ignore_errors=True)
    if not _is_intact(folder):
        raise RuntimeError(f"no intact transform template could be put in {folder}")
    return folder


def remove_if_scratch(folder: str) -> None:
    """Removes ``folder`` if :func:`template` built it in a temporary folder of its own (the
    cache could not be written); a template in the cache stays."""
    parent = os.path.dirname(folder)
    if os.path.basename(parent).startswith(_SCRATCH_PREFIX) and os.path.dirname(parent) == tempfile.gettempdir():
        shutil.rmtree(parent, ignore_errors=True)


def labelled_schema(schema_text: bytes, vocabulary_size: int) -> bytes:
    """The transformed schema with the domain ``tft.apply_vocabulary`` gives the ``label``
    output, which depends on the run's vocabulary: ids -1 (unknown) to its size - 1."""
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=import-outside-toplevel

    parsed = text_format.Parse(schema_text.decode("utf-8"), schema_pb2.Schema())
    for feature in parsed.feature:
        if feature.name == transform_graph.LABEL:
            feature.int_domain.min = -1
            feature.int_domain.max = vocabulary_size - 1
            feature.int_domain.is_categorical = True
    return text_format.MessageToString(parsed).encode("utf-8")


def write_transform(staged: str, image_info: dict, mask_values, raw: dict, class_names: list[str],
                    root: str | None = None) -> None:
    """The run's ``transform_fn/`` and ``transformed_metadata/`` in ``staged`` (local or
    ``gs://``): the template's files, and this run's statistics as its assets."""
    source = template(image_info, mask_values, root)
    try:
        _copy_with_assets(source, staged, image_info, raw, class_names)
    finally:
        remove_if_scratch(source)


def _copy_with_assets(source: str, staged: str, image_info: dict, raw: dict, class_names: list[str]) -> None:
    assets = {
        f"transform_fn/assets/{transform_graph.STATISTICS}":
            transform_graph.statistics_lines(raw, image_info["channels"]).encode("utf-8"),
        f"transform_fn/assets/{transform_graph.CLASS_NAMES}":
            transform_graph.vocabulary_lines(class_names).encode("utf-8"),
    }
    vocabulary_size = max(len(class_names), 1)  # tf.Transform's placeholder token fills an empty one
    schema_name = "transformed_metadata/schema.pbtxt"
    assets[schema_name] = labelled_schema(filesystem.read_bytes(os.path.join(source, schema_name)), vocabulary_size)
    # as tft.vocabulary's annotation writes it: TFTransformOutput.vocabulary_file_by_name reads it
    assets[ASSET_MAP] = json.dumps({transform_graph.CLASS_NAMES: transform_graph.CLASS_NAMES}).encode("utf-8")
    names = sorted(set(_files(source)) | {ASSET_MAP})
    missing = set(assets) - set(names)
    if missing or not all(name.split("/", 1)[0] in TRANSFORM_DIRS for name in names):
        raise RuntimeError(f"the transform template {source} is not the graph this code writes: {sorted(missing)}")
    for name in names:
        data = assets[name] if name in assets else filesystem.read_bytes(os.path.join(source, name))
        filesystem.write_bytes(join(staged, name), data)
