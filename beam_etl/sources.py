"""Sources: PTransforms that turn a dataset's location into :class:`SourceRecord` elements.

Each source returns ``(records, rejected)``: the paired inputs, and a
:class:`~beam_etl.records.Rejection` for every file that cannot become one (an image without
a mask, a mask without an image, a listed image that is missing). Files are matched through
Beam's FileSystems, so local paths and ``gs://`` work alike; only URIs travel here, the bytes
are read later, in the decoding step, after the shuffle that spreads the work.

Files whose name starts with a dot (macOS ``._*`` resource forks ship inside the Oxford-IIIT
archive) are not inputs and are skipped.
"""

from __future__ import annotations

import posixpath

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import MatchResult
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_etl import bigquery_source, filesystem
from beam_etl.records import Rejection, SourceRecord, SplitRejections
from beam_etl.splits import TRAINVAL

OXFORD_LISTS = (("trainval.txt", TRAINVAL), ("test.txt", "test"))


def file_stem(uri: str) -> str:
    """``gs://b/images/Abyssinian_1.jpg`` -> ``Abyssinian_1``."""
    return posixpath.splitext(posixpath.basename(uri))[0]


def check_glob(glob: str, flag: str) -> None:
    """Fails at launch, naming the flag and the glob, when the glob matches no file."""
    try:
        result: MatchResult = FileSystems.match([glob], limits=[1])[0]
        found = bool(result.metadata_list)
    except Exception as error:  # pylint: disable=broad-except  # BeamIOError wraps any backend error
        raise ValueError(f"{flag} {glob!r} cannot be matched: {error}") from None
    if not found:
        raise ValueError(f"{flag} {glob!r} matches no file")


def _is_hidden(uri: str) -> bool:
    return posixpath.basename(uri).startswith(".")


@beam.ptransform_fn
def _MatchByStem(pbegin, glob):  # pylint: disable=invalid-name
    return (pbegin
            | "Match" >> fileio.MatchFiles(glob, empty_match_treatment=fileio.EmptyMatchTreatment.DISALLOW)
            | "DropHidden" >> beam.Filter(lambda metadata: not _is_hidden(metadata.path))
            | "KeyByStem" >> beam.Map(lambda metadata: (file_stem(metadata.path), metadata.path)))


IMAGE, MASK, META, RECORD = "image", "mask", "meta", "record"  # what a grouped entry holds


def _tag(pcoll, label: str, source: int, tag: str):
    """``(key, value)`` -> ``(key, (source, tag, value))``: the entries the pairing groups."""
    return pcoll | label >> beam.Map(lambda element: (element[0], (source, tag, element[1])))


def _precedence(record: SourceRecord) -> tuple:
    """Of records with the same key, the first by this order is kept, whatever the runner."""
    return (record.image_uri, record.mask_uri or "", record.label, record.label_name,
            record.split or "")


class _PairAndDedupFn(beam.DoFn):
    """``(key, [(source, tag, value)])`` -> one record, or rejections.

    Per source, files are paired by stem (tags ``image``, ``mask`` and an Oxford list's
    ``meta``; a ``record`` is already whole, a BigQuery row); then, of the records that
    several sources make for the key, the first by :func:`_precedence` is kept.
    """

    def __init__(self):
        self._rejected = Metrics.counter("beam_etl", "rejected_at_source")

    def _reject(self, uri, reason, message, key):
        self._rejected.inc()
        return Rejection(uri=uri, stage="pair", reason=reason, message=message, key=key)

    def _pair(self, stem, grouped):
        images, masks = sorted(grouped.get(IMAGE, ())), sorted(grouped.get(MASK, ()))
        metas = sorted(grouped.get(META, ()))
        for extra in images[1:]:
            yield self._reject(extra, "duplicate_key",
                               f"another image with stem {stem!r} was used: {images[0]}", stem)
        for extra in masks[1:]:
            yield self._reject(extra, "duplicate_key",
                               f"another mask with stem {stem!r} was used: {masks[0]}", stem)
        if not images:
            if masks:
                yield self._reject(masks[0], "missing_image", f"mask has no image with stem {stem!r}", stem)
            for _, _, _, list_uri, _ in metas:
                root = posixpath.dirname(posixpath.dirname(list_uri))
                yield self._reject(posixpath.join(root, "images", f"{stem}.jpg"), "missing_image",
                                   f"{stem!r} is listed in {list_uri} but has no image file", stem)
            return
        if not masks:
            yield self._reject(images[0], "missing_mask", f"image has no mask with stem {stem!r}", stem)
            return
        conflicting = sorted({(split, label) for split, label, *_ in metas})
        if len(conflicting) > 1:
            lines = [f"{uri}:{number} ({split}, class {label + 1})" for split, label, _, uri, number in metas]
            yield self._reject(images[0], "conflicting_lists",
                               f"{stem!r} is listed with different classes or splits: {'; '.join(lines)}", stem)
            return
        if metas:
            split, label, label_name, *_ = metas[0]
            yield SourceRecord(key=stem, image_uri=images[0], mask_uri=masks[0], label=label,
                               label_name=label_name, split=split)
        else:
            yield SourceRecord(key=stem, image_uri=images[0], mask_uri=masks[0])

    def process(self, element):
        key, entries = element
        by_source: dict[int, dict[str, list]] = {}
        for source, tag, value in entries:
            by_source.setdefault(source, {}).setdefault(tag, []).append(value)
        records = []
        for source in sorted(by_source):
            grouped = by_source[source]
            made = grouped[RECORD] if RECORD in grouped else self._pair(key, grouped)
            for output in made:
                if isinstance(output, Rejection):
                    yield output
                else:
                    records.append(output)
        records.sort(key=_precedence)
        yield from records[:1]
        for record in records[1:]:
            yield self._reject(record.image_uri, "duplicate_key",
                               f"key {key!r} already comes from {records[0].image_uri}", key)


@beam.ptransform_fn
def _PairAndDedup(entries):  # pylint: disable=invalid-name
    """Entries of every source -> ``(records, rejected)``: one GroupByKey for pairing and for
    unique keys, which is also the shuffle that spreads the (tiny) records over workers."""
    return (entries
            | "GroupByKey" >> beam.GroupByKey()  # (key, [(source, tag, value)])
            | "PairAndDedup" >> beam.ParDo(_PairAndDedupFn())  # SourceRecord | Rejection
            | "SplitRejections" >> SplitRejections())


class ReadImageMaskPairs(beam.PTransform):
    """Images and masks from two globs, paired by file stem."""

    def __init__(self, images_glob: str, masks_glob: str):
        super().__init__()
        self._images_glob = images_glob
        self._masks_glob = masks_glob

    def entries(self, pbegin, source: int = 0) -> list:
        """The files as ``(stem, (source, tag, uri))``, before pairing (see :class:`ReadSources`)."""
        return [_tag(pbegin | "MatchImages" >> _MatchByStem(self._images_glob), "TagImages", source, IMAGE),
                _tag(pbegin | "MatchMasks" >> _MatchByStem(self._masks_glob), "TagMasks", source, MASK)]

    def expand(self, pbegin):
        return self.entries(pbegin) | "FlattenEntries" >> beam.Flatten() | "Pair" >> _PairAndDedup()


def parse_oxford_list(text: str, list_uri: str, split: str):
    """Lines ``Abyssinian_100 1 1 1`` (name, class id 1-37, species, breed id); ``#`` comments.

    Yields ``(stem, (split, label, breed_name, list_uri, line_number))`` with label = class id - 1.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            name, class_id = fields[0], int(fields[1])
            if len(fields) != 4 or not 1 <= class_id <= 9999:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{list_uri}:{number}: expected 'NAME CLASS_ID SPECIES BREED_ID', "
                             f"got {line!r}") from None
        yield name, (split, class_id - 1, name.rsplit("_", 1)[0], list_uri, number)


def _read_oxford_list(entry):
    """An Oxford list file's entries; none where the dataset has no such list."""
    list_uri, split = entry
    if not filesystem.exists(list_uri):
        return
    yield from parse_oxford_list(filesystem.read_bytes(list_uri).decode("utf-8"), list_uri, split)


class ReadOxfordPets(beam.PTransform):
    """A dataset in the Oxford-IIIT Pet layout under ``root``.

    ``images/*.jpg`` and ``annotations/trimaps/*.png`` are paired by stem; the list files
    ``annotations/trainval.txt`` and ``annotations/test.txt``, where present, give each
    image's class (label = CLASS-ID - 1, name = the breed) and split. Images in no list keep
    label -1 and are split by ``--split_fractions``. ``root`` is a path, not a pattern: its glob
    characters match only themselves.
    """

    def __init__(self, root: str):
        super().__init__()
        self._root = root.rstrip("/")

    def list_files(self) -> list[tuple[str, str]]:
        """The list files the layout may have (read in the job, where present: building the job
        touches no source)."""
        return [(f"{self._root}/annotations/{name}", split) for name, split in OXFORD_LISTS]

    @property
    def images_glob(self) -> str:
        return f"{filesystem.escape_glob(self._root)}/images/*.jpg"

    @property
    def masks_glob(self) -> str:
        return f"{filesystem.escape_glob(self._root)}/annotations/trimaps/*.png"

    def entries(self, pbegin, source: int = 0) -> list:
        """Files and list lines as ``(stem, (source, tag, value))``, before pairing."""
        metas = (pbegin
                 | "ListFiles" >> beam.Create(self.list_files())
                 | "ReadLists" >> beam.FlatMap(_read_oxford_list))  # (stem, (split, label, name, list, line))
        return [_tag(pbegin | "MatchImages" >> _MatchByStem(self.images_glob), "TagImages", source, IMAGE),
                _tag(pbegin | "MatchMasks" >> _MatchByStem(self.masks_glob), "TagMasks", source, MASK),
                _tag(metas, "TagLists", source, META)]

    def expand(self, pbegin):
        return self.entries(pbegin) | "FlattenEntries" >> beam.Flatten() | "Pair" >> _PairAndDedup()


@beam.ptransform_fn
def _Entries(pbegin, source, index: int):  # pylint: disable=invalid-name
    return source.entries(pbegin, index) | "FlattenEntries" >> beam.Flatten()


class ReadSources(beam.PTransform):
    """Every source of the job, flattened, with keys made unique across sources.

    Keys are file stems, or a BigQuery source's key column; when two sources yield the same
    key, the record whose image URI sorts first is kept and the others are rejected as
    ``duplicate_key`` (the message names the URI that was kept). One grouping by key pairs
    images with masks (and Oxford list lines) and makes keys unique; it is also the shuffle
    that spreads the (tiny) records over workers before the bytes are read, so decoding is
    never fused onto the worker that listed the files.
    """

    def __init__(self, config):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        file_sources = ([(f"ReadImages{index}", ReadImageMaskPairs(images, masks))
                         for index, (images, masks) in enumerate(zip(self._config.images, self._config.masks))]
                        + [(f"ReadOxfordPets{index}", ReadOxfordPets(root))
                           for index, root in enumerate(self._config.oxford_pets)])
        entries = [pbegin | label >> _Entries(source, index) for index, (label, source) in enumerate(file_sources)]
        columns = self._config.bigquery_columns
        tables = ([(f"BigQueryTable{index}", {"table": table}) for index, table in enumerate(self._config.bigquery_tables)]
                  + [(f"BigQueryQuery{index}", {"query": query, "query_index": index})
                     for index, query in enumerate(self._config.bigquery_queries)])
        rejected = []
        for label, where in tables:
            records, row_rejected = pbegin | f"Read{label}" >> bigquery_source.ReadBigQueryRows(columns, **where)
            entries.append(_tag(records | f"Key{label}" >> beam.Map(lambda record: (record.key, record)),
                                f"Tag{label}", len(entries), RECORD))
            rejected.append(row_rejected)
        records, pair_rejected = entries | "FlattenEntries" >> beam.Flatten() | "Pair" >> _PairAndDedup()
        return records, (rejected + [pair_rejected]) | "FlattenRejected" >> beam.Flatten()


def check_sources(config, pipeline_options=None) -> None:
    """Launch-time checks: every glob matches something, every Oxford root has images, every
    BigQuery table exists with the named columns."""
    for images, masks in zip(config.images, config.masks):
        check_glob(images, "--images")
        check_glob(masks, "--masks")
    for root in config.oxford_pets:
        source = ReadOxfordPets(root)
        check_glob(source.images_glob, "--oxford_pets")
        check_glob(source.masks_glob, "--oxford_pets")
    for table in config.bigquery_tables:
        bigquery_source.check_table(table, config.bigquery_columns, pipeline_options)
