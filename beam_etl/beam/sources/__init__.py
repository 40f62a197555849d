"""Sources: where the job's inputs come from, as PTransforms that make pairing entries.

A kind of source is one module here, registered by one line in :data:`SOURCE_KINDS`, with

- ``Settings``: a frozen dataclass of what its flags say, which travels to every worker inside
  :attr:`JobConfig.sources <beam_etl.config.JobConfig>`; its fields are named like its flags
  (the manifest lists them among the others), its ``__post_init__`` raises a ValueError naming
  the flag, and ``splits(config)`` names the splits its inputs choose themselves (``()`` when
  ``--split_fractions`` decides);
- ``FLAGS``: how the "give at least one source" error names it;
- ``add_flags(parser, group)``: its flags (``group``: the "sources" group of ``--help``);
- ``settings(flags)``: its ``Settings`` from the parsed flags, or None when the run names none;
- ``from_config(config)``: its sources for a run (none when ``config.source(Settings)`` is None);
- optionally ``with_pipeline_options(settings, pipeline_options)``: the settings, completed
  from Beam's own flags (BigQuery's ``--project``), or a ValueError naming the flag.

Adding a kind is its module and one line in :data:`SOURCE_KINDS`; nothing else changes.

Each source object has

- ``label``: a unique step name (``"ReadOxfordPets0"``);
- ``check(pipeline_options)``: launch-time checks that fail naming the flag (a glob matches
  nothing, a table lacks a column); it reads no image;
- optionally ``count_inputs(limit)``: how many inputs it holds, counting no further than
  ``limit`` (a listing; the job sizes its local workers by it);
- optionally ``local_roots()``: the local folders all its inputs lie under, or None where
  one is not local (:mod:`beam_etl.beam.up_to_date` snapshots them);
- ``entries(pbegin, source_index)`` -> ``(entries, rejected)``: lists of PCollections, the
  entries ``(key, (source_index, tag, value))`` that :mod:`~beam_etl.beam.sources.pairing`
  groups into one :class:`~beam_etl.elements.SourceRecord` per key, and the
  :class:`~beam_etl.elements.Rejection` s it made itself.

Only URIs travel here: the bytes are read later, in the decoding step, after the shuffle that
spreads the work.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from beam_etl.beam.sources import bigquery, files, oxford
from beam_etl.beam.sources.pairing import PairAndDedup
from beam_etl.output_layout import is_within
from beam_etl.splits import assign_split

SOURCE_KINDS = (
    files,
    oxford,
    bigquery,
)


def sources_of(config) -> list:
    return [source for kind in SOURCE_KINDS for source in kind.from_config(config)]


@beam.ptransform_fn
def _Entries(pbegin, source, index: int):  # pylint: disable=invalid-name
    entries, rejected = source.entries(pbegin, index)
    return entries | "FlattenEntries" >> beam.Flatten(), rejected


def _with_split(record, config):
    """The record with its output split, decided here once for every later step."""
    return dataclasses.replace(record, split=assign_split(record.key, record.split, config))


class ReadSources(beam.PTransform):
    """Every source of the job -> ``(records, rejected)``: one record per key, its ``split`` the
    output split.

    Keys are file stems, or a BigQuery source's key column; when two sources yield the same
    key, the record whose image URI sorts first is kept and the others are rejected as
    ``duplicate_key`` (the message names the URI that was kept).
    """

    def __init__(self, config):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        entries, rejected = [], []
        for index, source in enumerate(sources_of(self._config)):
            source_entries, source_rejected = pbegin | source.label >> _Entries(source, index)
            entries.append(source_entries)
            rejected.extend(source_rejected)
        records, pair_rejected = entries | "FlattenEntries" >> beam.Flatten() | "Pair" >> PairAndDedup()
        records = records | "AssignSplits" >> beam.Map(_with_split, self._config)
        return records, (rejected + [pair_rejected]) | "FlattenRejected" >> beam.Flatten()


def count_inputs(config, limit: int) -> int | None:
    """How many inputs the sources hold, counting no further than ``limit``; None when a source
    cannot tell without reading it (a BigQuery query)."""
    total = 0
    for source in sources_of(config):
        if not hasattr(source, "count_inputs"):
            return None
        total += source.count_inputs(limit - total)
        if total >= limit:
            break
    return total


def local_roots(config) -> list[str] | None:
    """The local folders every input of the run lies under; None when a source cannot name them
    (a BigQuery table, a ``gs://`` glob)."""
    roots = []
    for source in sources_of(config):
        source_roots = source.local_roots() if hasattr(source, "local_roots") else None
        if source_roots is None or None in source_roots:
            return None
        roots.extend(source_roots)
    return roots


def check_sources(config, pipeline_options=None) -> None:
    """Launch-time checks of every source (see the module's docstring), and of ``--output`` and
    ``--cache`` against them: neither may lie in the folder a source's glob lists, where the
    job's files would be read as inputs by the next run."""
    for source in sources_of(config):
        source.check(pipeline_options)
    places = [("--output", config.output), ("--cache", config.cache_dir)]
    for source in sources_of(config):
        for source_flag, value, folder in source.listed_folders() if hasattr(source, "listed_folders") else []:
            for flag, place in places:
                if place and folder is not None and is_within(place, folder):
                    raise ValueError(f"{flag} {place!r} lies in {folder!r}, which {source_flag} {value!r} lists: "
                                     "the job's files would be read as inputs by its next run; choose a "
                                     "folder outside the inputs")
