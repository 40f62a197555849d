"""``--images GLOB --masks GLOB``: images and masks from two globs, paired by file stem."""

from __future__ import annotations

import apache_beam as beam

from beam_etl.beam.sources.pairing import IMAGE, MASK, MatchByStem, PairAndDedup, check_glob, tag


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

    def entries(self, pbegin, source: int = 0) -> tuple[list, list]:
        """The files as ``(stem, (source, tag, uri))``, before pairing; no rejections yet."""
        return [tag(pbegin | "MatchImages" >> MatchByStem(self._images_glob), "TagImages", source, IMAGE),
                tag(pbegin | "MatchMasks" >> MatchByStem(self._masks_glob), "TagMasks", source, MASK)], []

    def expand(self, pbegin):
        return self.entries(pbegin)[0] | "FlattenEntries" >> beam.Flatten() | "Pair" >> PairAndDedup()


def from_config(config) -> list[ReadImageMaskPairs]:
    return [ReadImageMaskPairs(images, masks, index)
            for index, (images, masks) in enumerate(zip(config.images, config.masks))]


def add_flags(parser, group) -> None:
    del parser
    group.add_argument(
        "--images", action="append", default=None, metavar="GLOB",
        help="Glob of images, e.g. 'DATA/images/*.jpg' or 'gs://bucket/images/**/*.jpg'. "
             "Paired by file stem with the --masks glob given in the same position.")
    group.add_argument(
        "--masks", action="append", default=None, metavar="GLOB",
        help="Glob of segmentation masks (single-channel or palette PNG).")


def config_fields(flags) -> dict:
    return {"images": tuple(flags.images or ()), "masks": tuple(flags.masks or ())}
