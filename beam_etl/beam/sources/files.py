"""``--images GLOB --masks GLOB``: images and masks from two globs, paired by file stem."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from beam_etl.beam import filesystem, up_to_date
from beam_etl.beam.sources import matching
from beam_etl.beam.sources.pairing import IMAGE, MASK, MatchByStem, PairAndDedup, check_glob, count_matches


class ReadImageMaskPairs(beam.PTransform):
    """Images and masks from two globs, paired by file stem."""

    def __init__(self, images_glob: str, masks_glob: str, index: int = 0):
        super().__init__()
        self._images_glob = images_glob
        self._masks_glob = masks_glob
        self.label = f"ReadImages{index}"

    def check(self, pipeline_options=None) -> None:
        check_glob(self._images_glob, "--images")
        check_glob(self._masks_glob, "--masks")

    def count_inputs(self, limit: int) -> int:
        return count_matches(self._images_glob, limit)

    def local_roots(self) -> list[str | None]:
        return [up_to_date.root_of(self._images_glob), up_to_date.root_of(self._masks_glob)]

    def listed_folders(self) -> list[tuple[str, str, str | None]]:
        """``(flag, value, folder)``: the folder each glob lists under (:func:`matching.root`)."""
        return [("--images", self._images_glob, matching.root(self._images_glob)),
                ("--masks", self._masks_glob, matching.root(self._masks_glob))]

    def entries(self, pbegin, source: int = 0) -> tuple[list, list]:
        """The files as ``(stem, (source, tag, uri))``, before pairing; no rejections yet."""
        return [pbegin | "MatchImages" >> MatchByStem(self._images_glob, source, IMAGE),
                pbegin | "MatchMasks" >> MatchByStem(self._masks_glob, source, MASK)], []

    def expand(self, pbegin):
        return self.entries(pbegin)[0] | "FlattenEntries" >> beam.Flatten() | "Pair" >> PairAndDedup()


@dataclasses.dataclass(frozen=True)
class Settings:
    """``--images`` and ``--masks``: globs that pair up in the order given."""

    images: tuple[str, ...] = ()
    masks: tuple[str, ...] = ()

    def __post_init__(self):
        if len(self.images) != len(self.masks):
            raise ValueError(
                f"--images and --masks come in pairs, got {len(self.images)} --images "
                f"{list(self.images)} and {len(self.masks)} --masks {list(self.masks)}")

    def splits(self, config) -> tuple[str, ...]:
        del config
        return ()  # --split_fractions decides


FLAGS = "--images/--masks"


def from_config(config) -> list[ReadImageMaskPairs]:
    settings = config.source(Settings)
    if settings is None:
        return []
    return [ReadImageMaskPairs(images, masks, index)
            for index, (images, masks) in enumerate(zip(settings.images, settings.masks))]


def add_flags(parser, group) -> None:
    del parser
    group.add_argument(
        "--images", action="append", default=None, metavar="GLOB",
        help="Glob of images, e.g. 'DATA/images/*.jpg' or 'gs://bucket/images/**/*.jpg'. "
             "Paired by file stem with the --masks glob given in the same position.")
    group.add_argument(
        "--masks", action="append", default=None, metavar="GLOB",
        help="Glob of segmentation masks (single-channel or palette PNG).")


def settings(flags) -> Settings | None:
    if not (flags.images or flags.masks):
        return None
    return Settings(images=tuple(filesystem.absolute(glob, "--images", glob=True) for glob in flags.images or ()),
                    masks=tuple(filesystem.absolute(glob, "--masks", glob=True) for glob in flags.masks or ()))
