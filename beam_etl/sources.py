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

from beam_etl import bigquery_source
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


class _PairByStemFn(beam.DoFn):
    """``(stem, {"image": [uri], "mask": [uri], "meta": [entry]})`` -> one record, or rejections."""

    def __init__(self):
        self._rejected = Metrics.counter("beam_etl", "rejected_at_source")

    def _reject(self, uri, reason, message, key):
        self._rejected.inc()
        return Rejection(uri=uri, stage="pair", reason=reason, message=message, key=key)

    def process(self, element):
        stem, grouped = element
        images, masks = sorted(grouped["image"]), sorted(grouped["mask"])
        metas = sorted(grouped.get("meta", ()))
        for extra in images[1:]:
            yield self._reject(extra, "duplicate_key",
                               f"another image with stem {stem!r} was used: {images[0]}", stem)
        for extra in masks[1:]:
            yield self._reject(extra, "duplicate_key",
                               f"another mask with stem {stem!r} was used: {masks[0]}", stem)
        if not images:
            if masks:
                yield self._reject(masks[0], "missing_image", f"mask has no image with stem {stem!r}", stem)
            for _, _, _, list_uri in metas:
                root = posixpath.dirname(posixpath.dirname(list_uri))
                yield self._reject(posixpath.join(root, "images", f"{stem}.jpg"), "missing_image",
                                   f"{stem!r} is listed in {list_uri} but has no image file", stem)
            return
        if not masks:
            yield self._reject(images[0], "missing_mask", f"image has no mask with stem {stem!r}", stem)
            return
        if metas:
            split, label, label_name, _ = metas[0]
            yield SourceRecord(key=stem, image_uri=images[0], mask_uri=masks[0], label=label,
                               label_name=label_name, split=split)
        else:
            yield SourceRecord(key=stem, image_uri=images[0], mask_uri=masks[0])


class ReadImageMaskPairs(beam.PTransform):
    """Images and masks from two globs, paired by file stem."""

    def __init__(self, images_glob: str, masks_glob: str):
        super().__init__()
        self._images_glob = images_glob
        self._masks_glob = masks_glob

    def expand(self, pbegin):
        images = pbegin | "MatchImages" >> _MatchByStem(self._images_glob)  # (stem, uri)
        masks = pbegin | "MatchMasks" >> _MatchByStem(self._masks_glob)  # (stem, uri)
        return ({"image": images, "mask": masks}
                | "GroupByStem" >> beam.CoGroupByKey()
                | "Pair" >> beam.ParDo(_PairByStemFn())  # SourceRecord | Rejection
                | "SplitRejections" >> SplitRejections())


def parse_oxford_list(text: str, list_uri: str, split: str):
    """Lines ``Abyssinian_100 1 1 1`` (name, class id 1-37, species, breed id); ``#`` comments.

    Yields ``(stem, (split, label, breed_name, list_uri))`` with label = class id - 1.
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
        yield name, (split, class_id - 1, name.rsplit("_", 1)[0], list_uri)


def _read_oxford_list(entry):
    list_uri, split = entry
    with FileSystems.open(list_uri) as handle:
        text = handle.read().decode("utf-8")
    yield from parse_oxford_list(text, list_uri, split)


class ReadOxfordPets(beam.PTransform):
    """A dataset in the Oxford-IIIT Pet layout under ``root``.

    ``images/*.jpg`` and ``annotations/trimaps/*.png`` are paired by stem; the list files
    ``annotations/trainval.txt`` and ``annotations/test.txt``, where present, give each
    image's class (label = CLASS-ID - 1, name = the breed) and split. Images in no list keep
    label -1 and are split by ``--split_fractions``.
    """

    def __init__(self, root: str):
        super().__init__()
        self._root = root.rstrip("/")

    def list_files(self) -> list[tuple[str, str]]:
        lists = [(f"{self._root}/annotations/{name}", split) for name, split in OXFORD_LISTS]
        return [(uri, split) for uri, split in lists if FileSystems.exists(uri)]

    @property
    def images_glob(self) -> str:
        return f"{self._root}/images/*.jpg"

    @property
    def masks_glob(self) -> str:
        return f"{self._root}/annotations/trimaps/*.png"

    def expand(self, pbegin):
        images = pbegin | "MatchImages" >> _MatchByStem(self.images_glob)  # (stem, uri)
        masks = pbegin | "MatchMasks" >> _MatchByStem(self.masks_glob)  # (stem, uri)
        metas = (pbegin
                 | "ListFiles" >> beam.Create(self.list_files())
                 | "ReadLists" >> beam.FlatMap(_read_oxford_list))  # (stem, (split, label, name, list))
        return ({"image": images, "mask": masks, "meta": metas}
                | "GroupByStem" >> beam.CoGroupByKey()
                | "Pair" >> beam.ParDo(_PairByStemFn())  # SourceRecord | Rejection
                | "SplitRejections" >> SplitRejections())


def _precedence(record: SourceRecord) -> tuple:
    """Of records with the same key, the first by this order is kept, whatever the runner."""
    return (record.image_uri, record.mask_uri or "", record.label, record.label_name,
            record.split or "")


class _DropDuplicateKeysFn(beam.DoFn):
    def __init__(self):
        self._rejected = Metrics.counter("beam_etl", "rejected_at_source")

    def process(self, element):
        key, records = element
        records = sorted(records, key=_precedence)
        yield records[0]
        for record in records[1:]:
            self._rejected.inc()
            yield Rejection(uri=record.image_uri, stage="pair", reason="duplicate_key",
                            message=f"key {key!r} already comes from {records[0].image_uri}", key=key)


class ReadSources(beam.PTransform):
    """Every source of the job, flattened, with keys made unique across sources.

    Keys are file stems, or a BigQuery source's key column; when two sources yield the same
    key, the record whose image URI sorts first is kept and the others are rejected as
    ``duplicate_key`` (the message names the URI that was kept). The grouping by key
    is also the shuffle that spreads the (tiny) records over workers before the bytes are
    read, so decoding is never fused onto the worker that listed the files.
    """

    def __init__(self, config):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        outputs = []
        for index, (images, masks) in enumerate(zip(self._config.images, self._config.masks)):
            outputs.append(pbegin | f"ReadImages{index}" >> ReadImageMaskPairs(images, masks))
        for index, root in enumerate(self._config.oxford_pets):
            outputs.append(pbegin | f"ReadOxfordPets{index}" >> ReadOxfordPets(root))
        columns = self._config.bigquery_columns
        for index, table in enumerate(self._config.bigquery_tables):
            outputs.append(pbegin | f"ReadBigQueryTable{index}"
                           >> bigquery_source.ReadBigQueryRows(columns, table=table))
        for index, query in enumerate(self._config.bigquery_queries):
            outputs.append(pbegin | f"ReadBigQueryQuery{index}"
                           >> bigquery_source.ReadBigQueryRows(columns, query=query, query_index=index))
        records = [records for records, _ in outputs] | "FlattenRecords" >> beam.Flatten()
        deduped, duplicates = (records
                               | "KeyByKey" >> beam.Map(lambda record: (record.key, record))
                               | "GroupByKey" >> beam.GroupByKey()  # (key, [SourceRecord])
                               | "DropDuplicateKeys" >> beam.ParDo(_DropDuplicateKeysFn())
                               | "SplitRejections" >> SplitRejections())
        rejected = ([rejected for _, rejected in outputs] + [duplicates]
                    | "FlattenRejected" >> beam.Flatten())
        return deduped, rejected


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
