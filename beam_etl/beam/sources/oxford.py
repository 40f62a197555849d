"""``--oxford_pets ROOT``: a dataset in the Oxford-IIIT Pet layout."""

from __future__ import annotations

import collections
import dataclasses
import os
import posixpath

import apache_beam as beam

from beam_etl import globs
from beam_etl.beam import filesystem, up_to_date
from beam_etl.beam.sources.pairing import IMAGE, MASK, META, MatchByStem, PairAndDedup, check_glob, count_matches, tag
from beam_etl.splits import TRAINVAL, may_land_in

OXFORD_LISTS = (("trainval.txt", TRAINVAL), ("test.txt", "test"))


def parse_oxford_list(text: str, list_uri: str, split: str):
    """Lines ``Abyssinian_100 1 1 1`` (name, class id 1-37, species, breed id); ``#`` comments.

    Yields ``(stem, (split, label, breed_name, list_uri, line_number))`` with label = class id - 1.
    Lines end at ``\n`` (``\r\n`` too) only, as a text editor numbers them: not at the form
    feeds and Unicode separators that ``str.splitlines`` also ends a line at.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            name, class_id = fields[0], _number(fields[1])
            if len(fields) != 4 or not 1 <= class_id <= 9999 or min(map(_number, fields[2:])) < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{list_uri}:{number}: expected 'NAME CLASS_ID SPECIES BREED_ID', "
                             f"got {line!r}") from None
        yield name, (split, class_id - 1, name.rsplit("_", 1)[0], list_uri, number)


def _number(text: str) -> int:
    """A list's number: ASCII digits only (``int`` would take ``+1``, ``1_0`` or Arabic-Indic digits)."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


def _list_text(list_uri: str) -> str:
    """A list file's text: UTF-8, with or without the byte order mark some editors write first
    (which would otherwise begin the first name)."""
    if filesystem.is_local(list_uri) and not os.path.isfile(filesystem.local_path(list_uri)):
        raise ValueError(f"{list_uri} is not a regular file")  # (a FIFO's read would wait for ever)
    data = filesystem.read_bytes(list_uri)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # (its offsets are in the bytes decoded: after a byte order mark)
        line = error.object.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{list_uri}:{line}: not UTF-8 text (byte {error.object[error.start]:#04x})") from None


def _read_oxford_list(entry):
    """An Oxford list file's entries; none where the dataset has no such list."""
    list_uri, split = entry
    if not filesystem.exists(list_uri):
        return
    images = posixpath.join(posixpath.dirname(posixpath.dirname(list_uri)), "images")
    for stem, meta in parse_oxford_list(_list_text(list_uri), list_uri, split):
        yield stem, (*meta, posixpath.join(images, f"{stem}.jpg"))


class ReadOxfordPets(beam.PTransform):
    """A dataset in the Oxford-IIIT Pet layout under ``root``.

    ``images/*.jpg`` and ``annotations/trimaps/*.png`` are paired by stem; the list files
    ``annotations/trainval.txt`` and ``annotations/test.txt``, where present, give each
    image's class (label = CLASS-ID - 1, name = the breed) and split. Images in no list keep
    label -1 and are split by ``--split_fractions``. ``root`` is a path, not a pattern: its glob
    characters match only themselves.
    """

    def __init__(self, root: str, index: int = 0):
        super().__init__()
        self._root = root.rstrip("/")
        self.label = f"ReadOxfordPets{index}"

    def check(self, pipeline_options=None) -> None:
        check_glob(self.images_glob, "--oxford_pets")
        check_glob(self.masks_glob, "--oxford_pets")
        for list_uri, split in self.list_files():  # (small files, read again by the job)
            try:
                if filesystem.exists(list_uri):
                    collections.deque(parse_oxford_list(_list_text(list_uri), list_uri, split), maxlen=0)
            except (ValueError, OSError) as error:
                raise ValueError(f"--oxford_pets {self._root!r}: {error}") from None

    def count_inputs(self, limit: int) -> int:
        return count_matches(self.images_glob, limit)

    def local_roots(self) -> list[str | None]:
        """Its ``images`` and ``annotations`` folders: its images, masks and lists lie under them
        (not the root: an output inside it, ``DATA/out``, would be an input of the next run's
        up-to-date check, and never be found up to date)."""
        root = up_to_date.local_path(self._root)
        return [root and os.path.join(root, "images"), root and os.path.join(root, "annotations")]

    def listed_folders(self) -> list[tuple[str, str, str | None]]:
        """``(flag, value, folder)``: the folders of its images and masks (the root is a path, its
        glob characters literal; on ``gs://``, prefixes)."""
        if "://" in self._root and not self._root.startswith("file://"):
            return [("--oxford_pets", self._root, f"{self._root.rstrip('/')}/{sub}")
                    for sub in ("images", "annotations/trimaps")]
        root = os.path.realpath(filesystem.local_path(self._root))  # (``..`` after links, as the OS)
        return [("--oxford_pets", self._root, os.path.join(root, *sub))
                for sub in (("images",), ("annotations", "trimaps"))]

    def list_files(self) -> list[tuple[str, str]]:
        """The list files the layout may have (read in the job, where present: building the job
        touches no source)."""
        return [(f"{self._root}/annotations/{name}", split) for name, split in OXFORD_LISTS]

    @property
    def images_glob(self) -> str:
        return f"{globs.escape_glob(self._root)}/images/*.jpg"

    @property
    def masks_glob(self) -> str:
        return f"{globs.escape_glob(self._root)}/annotations/trimaps/*.png"

    def entries(self, pbegin, source: int = 0) -> tuple[list, list]:
        """Files and list lines as ``(stem, (source, tag, value))``, before pairing; no
        rejections yet."""
        metas = (pbegin
                 | "ListFiles" >> beam.Create(self.list_files())
                 | "ReadLists" >> beam.FlatMap(_read_oxford_list))  # (stem, (split, label, name, list, line, image))
        return [pbegin | "MatchImages" >> MatchByStem(self.images_glob, source, IMAGE),
                pbegin | "MatchMasks" >> MatchByStem(self.masks_glob, source, MASK),
                tag(metas, "TagLists", source, META)], []

    def expand(self, pbegin):
        return self.entries(pbegin)[0] | "FlattenEntries" >> beam.Flatten() | "Pair" >> PairAndDedup()


@dataclasses.dataclass(frozen=True)
class Settings:
    """``--oxford_pets``: dataset roots in the Oxford-IIIT Pet layout."""

    oxford_pets: tuple[str, ...] = ()

    def splits(self, config) -> tuple[str, ...]:
        """The splits of its lists' inputs (val is cut from trainval)."""
        return tuple(name for split in dict(OXFORD_LISTS).values() for name in may_land_in(split, config))


FLAGS = "--oxford_pets"


def from_config(config) -> list[ReadOxfordPets]:
    settings = config.source(Settings)
    if settings is None:
        return []
    return [ReadOxfordPets(root, index) for index, root in enumerate(settings.oxford_pets)]


def add_flags(parser, group) -> None:
    del parser
    group.add_argument(
        "--oxford_pets", action="append", default=None, metavar="ROOT",
        help="Root of a dataset in the Oxford-IIIT Pet layout: images/*.jpg, "
             "annotations/trimaps/*.png, annotations/{trainval,test}.txt give labels and splits.")


def settings(flags) -> Settings | None:
    if not flags.oxford_pets:
        return None
    return Settings(oxford_pets=tuple(filesystem.absolute(root, "--oxford_pets") for root in flags.oxford_pets))
