"""Pairing: the entries every source makes, grouped by key into one record per key.

Sources emit entries ``(key, (source, tag, value))``: a file source an ``image`` or ``mask``
URI per file stem (and the Oxford layout a ``meta`` line of its lists), a BigQuery source a
whole ``record``. One GroupByKey over the entries of every source pairs images with masks,
per source, and keeps one record per key across sources; it is also the shuffle that spreads
the (tiny) records over workers before the bytes are read, so decoding is never fused onto the
worker that listed the files.

Files whose name starts with a dot (macOS ``._*`` resource forks ship inside the Oxford-IIIT
archive) are not inputs and are skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_etl import globs
from beam_etl.beam import filesystem
from beam_etl.beam.rejections import SplitRejections
from beam_etl.beam.sources import matching
from beam_etl.elements import UNKNOWN_LABEL, Rejection, SourceRecord, is_reserved_key


def file_stem(uri: str) -> str:
    """``gs://b/images/Abyssinian_1.jpg`` -> ``Abyssinian_1``."""
    return posixpath.splitext(posixpath.basename(uri))[0]


_CHECKED_MATCHES = 1000  # how far the launch looks for a file that is not hidden (a listing of gs:// is paged)


def check_glob(glob: str, flag: str) -> None:
    """Fails at launch, naming the flag and the glob, when the glob names no input: it matches
    nothing, only hidden files (which are not inputs) among its first matches, or is a folder's
    name; when it is not UTF-8 text, which Beam cannot carry; or, a local glob that walks
    folders (walked whole), when one that may hold its matches cannot be listed, which would
    lose them."""
    shown = _shown(glob)
    if shown is not None:
        raise ValueError(f"{flag} {shown!r} is not UTF-8 text (its other bytes are shown as \\xNN), "
                         "which Beam cannot carry: rename the folder")
    if filesystem.is_local(glob) and not glob.endswith(("/", "\\")) and globs.literal_start(glob)[0] is None \
            and os.path.isdir(globs.unescape(filesystem.local_path(glob))):  # ("DIR/" names its files, as in Beam)
        raise ValueError(f"{flag} {glob!r} is a folder, not files: give a glob, such as '{glob}/*.jpg'")
    whole = "://" not in glob and matching.walks_folders(glob)  # (its folders each listed, at launch)
    seen = inputs = 0
    try:
        for path in matching.matches(glob, limit=None if whole else _CHECKED_MATCHES):
            if not is_hidden(path):
                inputs += 1
                if not whole:
                    break
            seen += 1
    except OSError as error:
        if "://" not in glob and error.filename is not None:
            raise ValueError(f"{flag} {glob!r}: cannot list the folder {error.filename!r} "
                             f"({os.strerror(error.errno)}), which may hold files it matches: give this user "
                             "access to it, or narrow the glob") from None
        raise ValueError(f"{flag} {glob!r} cannot be matched: {error}") from None
    except Exception as error:  # pylint: disable=broad-except  # BeamIOError wraps any backend error
        raise ValueError(f"{flag} {glob!r} cannot be matched: {error}") from None
    if inputs or seen == _CHECKED_MATCHES:
        return  # (as many hidden files: the run lists the rest)
    if seen:
        raise ValueError(f"{flag} {glob!r} matches only hidden files (names that start with a dot), "
                         "which are not inputs")
    raise ValueError(f"{flag} {glob!r} matches no file")


def count_matches(glob: str, limit: int) -> int:
    """How many inputs are among the first ``limit`` files ``glob`` matches (hidden files are none)."""
    return sum(1 for path in matching.matches(glob, limit) if not is_hidden(path))


def is_hidden(uri: str) -> bool:
    return posixpath.basename(uri).startswith(".")


def _shown(path: str) -> str | None:
    """None for a path that is UTF-8 text; else the path with the bytes that are not shown as
    ``\\xNN`` (a local file name is bytes, and Beam carries paths as UTF-8 text)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return None


def _entries(glob: str, source: int, tag_: str):
    found = False
    for path in matching.matches(glob):
        found = True
        if is_hidden(path):
            continue
        shown = _shown(path)
        if shown is None:
            yield file_stem(path), (source, tag_, path)
        else:  # (rejected by the pairing, under the name shown; told apart by its real path)
            yield file_stem(shown), (source, NOT_UTF8, (shown, _shown(os.path.realpath(path)) or path))
    if not found:  # (checked at launch; gone since)
        raise FileNotFoundError(f"{glob!r} matches no file")


@beam.ptransform_fn
def MatchByStem(pbegin, glob: str, source: int, tag_: str):  # pylint: disable=invalid-name
    """The entries ``(stem, (source, tag_, path))`` of the files ``glob`` matches
    (:mod:`beam_etl.beam.sources.matching`) but hidden ones, listed on a worker in one step;
    none is an error."""
    return pbegin | "Pattern" >> beam.Create([glob]) | "MatchAll" >> beam.FlatMap(_entries, source, tag_)


# What a grouped entry holds: an image or a mask URI; a record that is already whole (a BigQuery
# row); or a meta line, a list's word on the stem: (split, label, label_name, list_uri,
# line_number, image_uri), where image_uri is the image the list expects (named when missing).
IMAGE, MASK, META, RECORD = "image", "mask", "meta", "record"
NOT_UTF8 = "not_utf8"  # a file whose name is not UTF-8: (its name, its real path), their bytes escaped (_shown)


def tag(pcoll, label: str, source: int, tag: str):
    """``(key, value)`` -> ``(key, (source, tag, value))``: the entries the pairing groups."""
    return pcoll | label >> beam.Map(lambda element: (element[0], (source, tag, element[1])))


def _precedence(record: SourceRecord) -> tuple:
    """Of records with the same key, the first by this order is kept, whatever the runner: the
    image URI that sorts first; of the same files, the record that gives a class, then a split
    (the same files named by ``--images`` and ``--oxford_pets``: the lists' class and split are
    kept); two rows of one table holding BYTES have the same URIs: their bytes' SHA-256 decide."""
    return (record.image_uri, record.mask_uri or "", record.label == UNKNOWN_LABEL, record.split is None,
            record.label, record.label_name, record.split or "",
            *map(_bytes_digest, (record.image_bytes, record.mask_bytes)))


def _bytes_digest(data: bytes | None) -> str:
    return "" if data is None else hashlib.sha256(data).hexdigest()


def _told_apart(record: SourceRecord) -> str:
    """``record``'s image URI, and where it carries bytes, their SHA-256 (the image's, the mask's)."""
    digests = [f"{part} SHA-256 {_bytes_digest(data)[:16]}..." for part, data in
               (("image", record.image_bytes), ("mask", record.mask_bytes)) if data is not None]
    return f"{record.image_uri} ({', '.join(digests)})" if digests else record.image_uri


def _one_per_files(records: list[SourceRecord]) -> tuple[list[SourceRecord], list[list[SourceRecord]]]:
    """``(records, disagreeing)``: records that name the same image and mask files (several
    sources listing one folder, however spelt, or one table's rows naming the same files) are one
    input, kept once: the one that gives a class, then a split, then the first by
    :func:`_precedence` (its URIs are the ones written), with the class and the split that any of
    them gives; where they give it different classes or splits, the group is ``disagreeing``."""
    if len(records) < 2:
        return records, []
    groups: dict[tuple, list[SourceRecord]] = {}
    for record in records:  # (a row that carries bytes: its bytes are what it is made of)
        made_of = tuple(identity for identity, _ in _files_of(record))
        if _carries_bytes(record):
            made_of += ("", record.image_uri, *map(_bytes_digest, (record.image_bytes, record.mask_bytes)))
        groups.setdefault(made_of, []).append(record)
    kept, disagreeing = [], []
    for _, same in sorted(groups.items()):  # (in an order of their own, not the runner's)
        same.sort(key=lambda record: (record.label == UNKNOWN_LABEL, record.split is None, _precedence(record)))
        labels = {(record.label, record.label_name) for record in same if record.label != UNKNOWN_LABEL}
        splits = {record.split for record in same if record.split is not None}
        if len(labels) > 1 or len(splits) > 1:
            disagreeing.append(same)
            continue
        label, label_name = labels.pop() if labels else (UNKNOWN_LABEL, "")
        kept.append(dataclasses.replace(same[0], label=label, label_name=label_name,
                                        split=splits.pop() if splits else None))
    return kept, disagreeing


def _said(record: SourceRecord) -> str:
    label = "no class" if record.label == UNKNOWN_LABEL else f"class {record.label_name or record.label}"
    return f"{label}, split {record.split or 'unset'}"


def _carries_bytes(record: SourceRecord) -> bool:
    return record.image_bytes is not None or record.mask_bytes is not None


def _files_of(record: SourceRecord) -> tuple[tuple[str, str], ...]:
    """``((identity, uri), ...)`` of the files a record is read from, image first (a row's
    bytes are none: the part it carries is read from no file)."""
    return tuple((_identity(uri), uri) for uri, data in ((record.image_uri, record.image_bytes),
                                                         (record.mask_uri, record.mask_bytes))
                 if uri is not None and data is None)


@dataclasses.dataclass(frozen=True)
class _Refused:
    """A refusal on its way to a :class:`Rejection`: the files it is of (``(identity, uri)``: an
    unpaired file; a record's image and mask), the first not yet written or rejected becoming
    its uri; a row that carries bytes, an input of its own, is refused under ``carried_uri``
    whatever else is."""

    files: tuple[tuple[str, str], ...]
    reason: str
    message: str
    carried_uri: str | None = None


def _refused(uris, reason: str, message: str) -> _Refused:
    return _Refused(tuple((_identity(uri), uri) for uri in uris), reason, message)


def _record_refused(record: SourceRecord, reason: str, message: str) -> _Refused:
    return _Refused(_files_of(record), reason, message, record.image_uri if _carries_bytes(record) else None)


def _distinct(uris) -> list[str]:
    """``uris`` sorted, each file once (the first spelling of a file named two ways: ``..``, a link)."""
    uris = sorted(set(uris))
    if len(uris) < 2:
        return uris
    first_spelling = {_identity(uri): uri for uri in reversed(uris)}
    return sorted(first_spelling.values())


_NOT_UTF8_IDENTITY = "\0not UTF-8: "  # + the real path shown: (a NUL is in no path)


CONFLICTS = ("conflicting_lists", "conflicting_sources")


def _roles(images: list[str], masks: list[str]) -> tuple[list[str], list[str], list[str]]:
    """``(images, masks, both)``: a file that the images' and the masks' globs both match (they
    overlap: ``--images 'D/*' --masks 'D/*.png'``) is no pair of its own; it is the one role its
    stem lacks, or, where the stem has other files for both roles, an extra (``both``)."""
    names = {posixpath.basename(image) for image in images}
    if not set(images) & set(masks) and not any(posixpath.basename(mask) in names for mask in masks):
        return images, masks, []  # (no file can be in both: most stems, whose real paths are not looked up)
    image_ids, mask_ids = {image: _identity(image) for image in images}, {mask: _identity(mask) for mask in masks}
    shared = set(image_ids.values()) & set(mask_ids.values())
    if not shared:
        return images, masks, []
    both = [image for image in images if image_ids[image] in shared]  # (one spelling each: _distinct)
    images = [image for image in images if image_ids[image] not in shared]
    masks = [mask for mask in masks if mask_ids[mask] not in shared]
    if images and masks:
        return images, masks, both
    return (images, both, []) if images else (both if masks else [], masks or both, [])


def _closest_first(images: list[str], masks: list[str]) -> tuple[list[str], list[str]]:
    """``images`` and ``masks`` of one stem, each with the file of the pair that lies closest
    first (the most leading folders in common, then the first by name): where a glob that walks
    folders finds a stem in several, ``D/b/x.jpg`` pairs with ``D/b/x.png``, not ``D/a/x.jpg``."""
    if not (images and masks) or (len(images) < 2 and len(masks) < 2):
        return images, masks
    _, image, mask = min((-_common_folders(image, mask), image, mask) for image in images for mask in masks)
    return [image] + [i for i in images if i != image], [mask] + [m for m in masks if m != mask]


def _common_folders(first: str, second: str) -> int:
    return len(os.path.commonprefix([posixpath.dirname(first).split("/"), posixpath.dirname(second).split("/")]))


def _identity(uri: str) -> str:
    """What tells files apart: a local path resolved as the OS resolves it (``..``, links), so
    that one file spelt two ways is one input; another URI as it is."""
    return os.path.realpath(filesystem.local_path(uri)) if filesystem.is_local(uri) else uri


class _PairAndDedupFn(beam.DoFn):
    """``(key, [(source, tag, value)])`` -> one record, or rejections.

    Per source, files are paired by stem (tags ``image``, ``mask`` and an Oxford list's
    ``meta``; a ``record`` is already whole, a BigQuery row); records of the same files are one
    input (:func:`_one_per_files`); then, of the records that several sources make for the
    key, the first by :func:`_precedence` is kept. Every file is written or rejected once: a
    refusal names the first of its files that is neither (an unpaired file, or a record's image
    or else its mask), and none where each is, written or named already (several sources may
    each have refused one file, or found it unpaired where another source paired it).
    """

    def __init__(self):
        self._rejected = Metrics.counter("beam_etl", "rejected_at_source")

    @staticmethod
    def _pair(stem, grouped):
        """One source's files and list lines of ``stem`` -> its record, and :class:`_Refused` s."""
        images, masks = _distinct(grouped.get(IMAGE, ())), _distinct(grouped.get(MASK, ()))
        metas = sorted(grouped.get(META, ()))
        images, masks, both = _roles(images, masks)
        images, masks = _closest_first(images, masks)
        for extra in both:
            yield _refused([extra], "duplicate_key", f"matches both the images' and the masks' globs, and the stem "
                           f"{stem!r} has other files for both: one input per stem")
        for extra in images[1:]:
            yield _refused([extra], "duplicate_key", f"the stem {stem!r} has {len(images)} images, one input per "
                           f"stem: {images[0]} is the one paired, or refused, for it")
        for extra in masks[1:]:
            yield _refused([extra], "duplicate_key", f"the stem {stem!r} has {len(masks)} masks, one input per "
                           f"stem: {masks[0]} is the one paired, or refused, for it")
        if not images:  # (one input missing, however many files and lines name it)
            lines = ", ".join(f"{list_uri}:{number}" for list_uri, number in sorted(meta[3:5] for meta in metas))
            if masks and metas:
                yield _refused(masks[:1], "missing_image",
                               f"{stem!r} has the mask {masks[0]} and is listed in {lines}, but has no image file")
            elif masks:
                yield _refused(masks[:1], "missing_image", f"mask has no image with stem {stem!r}")
            elif metas:
                yield _refused([metas[0][-1]], "missing_image", f"{stem!r} is listed in {lines}, but has no image file")
            return
        if not masks:
            yield _refused(images[:1], "missing_mask", f"image has no mask with stem {stem!r}")
            return
        conflicting = sorted({(split, label) for split, label, *_ in metas})
        if len(conflicting) > 1:
            lines = [f"{uri}:{number} ({split}, class {label + 1})" for split, label, _, uri, number, _ in metas]
            yield _refused([images[0], masks[0]], "conflicting_lists",
                           f"{stem!r} is listed with different classes or splits: {'; '.join(lines)}")
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
        refused, records = [], []
        for source in sorted(by_source):
            grouped = by_source[source]
            refused += [_Refused(((_NOT_UTF8_IDENTITY + real, shown),), "file_name_not_utf8", _NOT_UTF8_MESSAGE)
                        for shown, real in sorted(grouped.pop(NOT_UTF8, ()))]
            for output in grouped[RECORD] if RECORD in grouped else self._pair(key, grouped):
                (refused if isinstance(output, _Refused) else records).append(output)
        records, disagreeing = _one_per_files(records)
        refused += [_record_refused(same[0], "conflicting_sources",
                                    f"the sources give the files {same[0].image_uri} and {same[0].mask_uri} different "
                                    f"classes or splits: {'; '.join(sorted({_said(record) for record in same}))}")
                    for same in disagreeing]
        records.sort(key=_precedence)
        kept = records[:1]
        conflicts = {refusal.reason for refusal in refused}.intersection(CONFLICTS)
        if records and conflicts:
            kept = []  # (a name given two classes or splits: written by no source)
            reason, said = ("conflicting_lists", "is listed in the Oxford lists") if "conflicting_lists" in conflicts \
                else ("conflicting_sources", "has files the sources give")
            refused += [_record_refused(record, reason, f"key {key!r} {said} with different classes or splits "
                                        "(rejected there too): none of its records is written") for record in records]
        elif records and is_reserved_key(key):
            kept = []
            refused += [_record_refused(record, "reserved_key", f"key {key!r} has the form of an augmentation "
                                        "copy's (KEY#aug<N>) and could collide with one; rename the file")
                        for record in records]
        else:
            for record in records[1:]:
                this = "" if record.image_bytes is None else f"; this is {_told_apart(record)}"
                refused.append(_record_refused(record, "duplicate_key",
                                               f"key {key!r} already comes from {_told_apart(records[0])}{this}"))
        yield from kept
        if refused:  # (most keys have none: their files' real paths are not looked up)
            yield from self._rejections(key, kept, refused)

    def _rejections(self, key: str, kept: list[SourceRecord], refused: list[_Refused]):
        """A :class:`Rejection` per refusal that names a file nothing else accounts for (Beam
        warns of a ``process`` that both yields and returns: this is a generator of its own)."""
        done = {identity for record in kept for identity, _ in _files_of(record)}
        for refusal in refused:
            uri = refusal.carried_uri or next((uri for identity, uri in refusal.files if identity not in done), None)
            if uri is None:
                continue  # (each of its files written, or named by a rejection already)
            done.update(identity for identity, _ in refusal.files)
            self._rejected.inc()
            yield Rejection(uri=uri, stage="pair", reason=refusal.reason, message=refusal.message, key=key)


_NOT_UTF8_MESSAGE = ("the file's name is not UTF-8 text (its other bytes are shown as \\xNN); Beam carries file "
                     "names as UTF-8: rename the file")


@beam.ptransform_fn
def PairAndDedup(entries):  # pylint: disable=invalid-name
    """Entries of every source -> ``(records, rejected)``: one GroupByKey for pairing and for
    unique keys, which is also the shuffle that spreads the (tiny) records over workers."""
    return (entries
            | "GroupByKey" >> beam.GroupByKey()  # (key, [(source, tag, value)])
            | "PairAndDedup" >> beam.ParDo(_PairAndDedupFn())  # SourceRecord | Rejection
            | "SplitRejections" >> SplitRejections())
