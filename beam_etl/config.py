"""The job's validated settings: one frozen dataclass that every transform receives.

Every value parser and every bound of the job's settings lives here, once: the flags' argparse
types (:mod:`beam_etl.beam.options`) and :class:`JobConfig`'s own checks call the same
functions, so a value is accepted from the command line exactly when it is accepted from code.
(A kind of source keeps its own flags' parsers in its module, next to its ``Settings``.) No
Beam import: the loader's command line uses the same parsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re

from beam_etl import schema
from beam_etl.output_layout import SHARD_DIGITS, SPLITS
IMAGE_FORMATS = ("jpeg", "png", "raw")
# How an image meets --image_size: stretched to it, its whole fitted inside and padded, or its
# short side fitted and the centre cropped (beam_etl.image.resizing).
RESIZE_MODES = ("stretch", "pad", "crop")
# The mask value of the padding --resize pad adds: no class (the statistics leave it out, the
# transform graph and the loader give it the ignore id -1).
PAD_MASK_VALUE = 255
DEFAULT_SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
MIN_SHARD_MB, MAX_SHARD_MB = 0.001, 1_000_000.0  # 1 KB to 1 TB per file


def flag_type(parse):
    """An argparse ``type`` from a parser that raises ValueError: the error names the value."""
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: {error}") from None
    convert.__name__ = parse.__name__.removeprefix("parse_")
    convert.parse = parse
    return convert


class FlagParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that reads any number written with a minus sign (``-inf``, ``-1e5``,
    ``-nan``) as a flag's value, so that the flag's own check refuses it, naming flag and value;
    argparse's own reads only ``-1`` and ``-1.5`` so, and calls ``-inf`` a missing value."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


def folder_place(text):
    """A folder flag's value, a local path made absolute (a ``scheme://`` one as it is): where
    it is recorded (the manifest's ``--cache``) it names the same folder from anywhere."""
    if not text:
        raise ValueError("must name a folder")
    if text.startswith("~"):
        raise ValueError("the shell did not expand '~' (it does not after '='): give it with a space, or the full path")
    return text if "://" in text else os.path.abspath(text)


def output_folder(text):
    """An output folder named on a reading command's line (``verify OUT``, ``load --data OUT``):
    not empty (``''`` would be read as the current folder by one reader, the root by another)."""
    if not text:
        raise ValueError("must name the job's output folder")
    return text


def positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def positive_hours(text):
    value = finite_float(text)
    if value <= 0:
        raise ValueError("must be a positive number of hours")
    return value


def _within(cast, low, high, *, below_high: bool = False):
    """A parser of ``cast(text)`` within ``[low, high]`` (``[low, high)`` with ``below_high``);
    nan fails every comparison, so it is refused too."""
    def parse(text):
        value = cast(text)
        if not (low <= value < high if below_high else low <= value <= high):
            raise ValueError(f"must be within [{low:g}, {high:g}{')' if below_high else ']'}")
        return value
    return parse


fraction = _within(float, 0.0, 1.0)
fraction_below_one = _within(float, 0.0, 1.0, below_high=True)
jpeg_quality = _within(int, 1, 100)
augment_copies = _within(int, 0, 100)
MAX_SHARDS = 10 ** SHARD_DIGITS - 1  # a split's files: the digits of their names
num_shards = _within(int, 1, MAX_SHARDS)
shard_size_mb = _within(float, MIN_SHARD_MB, MAX_SHARD_MB)


def parse_image_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"96x128"`` -> (96, 128) as (height, width)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(text))
    if not match:
        raise ValueError(f"expected N or HxW, got {text!r}")
    height = int(match.group(1))
    width = int(match.group(2) or match.group(1))
    if not (1 <= height <= 16384 and 1 <= width <= 16384):
        raise ValueError(f"sides must be between 1 and 16384, got {text!r}")
    return height, width


def parse_split_fractions(text: str) -> tuple[tuple[str, float], ...]:
    """``"train=0.8,val=0.1,test=0.1"`` -> (("train", 0.8), ...); fractions must sum to 1."""
    result = []
    for item in str(text).split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in SPLITS:
            raise ValueError(f"expected SPLIT=FRACTION items with SPLIT in {SPLITS}, got {text!r}")
        try:
            fraction = float(value)
        except ValueError:
            raise ValueError(f"fraction of {name!r} is not a number in {text!r}") from None
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction of {name!r} must be in [0, 1], got {text!r}")
        result.append((name, fraction))
    names = [name for name, _ in result]
    if len(set(names)) != len(names):
        raise ValueError(f"a split is named twice in {text!r}")
    if abs(sum(f for _, f in result) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {text!r}")
    return tuple(result)


def parse_mask_values(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` or ``"0-20,255"`` -> the allowed mask label values."""
    values: set[int] = set()
    for item in str(text).split(","):
        item = item.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not match:
            raise ValueError(f"expected comma-separated values or ranges like 0-20, got {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 0 <= low <= high <= 255:
            raise ValueError(f"mask values must be within 0-255, got {text!r}")
        values.update(range(low, high + 1))
    return tuple(sorted(values))


def mask_format(image_format: str) -> str:
    """Masks are always lossless: raw next to raw images, PNG otherwise."""
    return "raw" if image_format == "raw" else "png"


@dataclasses.dataclass(frozen=True)
class ChainSettings:
    """What the per-image chain (:mod:`beam_etl.image.chain`) is given of the settings: every
    setting that shapes an outcome, and nothing else. The cache of outcomes
    (:mod:`beam_etl.beam.example_cache`) hashes exactly these, so a setting the chain reads is
    always part of an outcome's name: a new one must be a field here (a :class:`JobConfig`
    field of the same name) before the chain can read it.

    Made by :meth:`JobConfig.chain_settings` for one split: the settings that shape training
    examples only (augmentation copies and their seed, the statistics' shares of training
    originals) are neutral for another split, whose outcomes then do not change with them."""

    image_size: tuple[int, int]
    image_format: str
    resize: str
    jpeg_quality: int
    max_pixels: int
    mask_values: tuple[int, ...] | None
    augment_copies: int
    seed: int
    statistics: bool

    @property
    def mask_format(self) -> str:
        return mask_format(self.image_format)


_NEUTRAL_OUTSIDE_TRAINING = {"augment_copies": 0, "seed": 0, "statistics": False}


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything the transforms need to know, validated once at launch."""

    output: str
    # One settings object per kind of source the run reads (each kind's ``Settings``, in
    # :mod:`beam_etl.beam.sources`): frozen dataclasses with a ``splits(config)`` method.
    sources: tuple = ()
    image_size: tuple[int, int] = (128, 128)
    image_format: str = "jpeg"
    resize: str = "stretch"
    jpeg_quality: int = 95
    max_pixels: int = 40_000_000
    mask_values: tuple[int, ...] | None = None
    augment_copies: int = 0
    seed: int = 0
    val_fraction: float = 0.1
    split_fractions: tuple[tuple[str, float], ...] = DEFAULT_SPLIT_FRACTIONS
    num_shards: int | None = None
    shard_size_mb: float = 100.0
    max_reject_fraction: float = 1.0
    overwrite: bool = False
    statistics: bool = True
    use_cache: bool = True  # --no_cache: every input decoded again, no outcome stored
    cache_dir: str | None = None  # --cache DIR; None: OUTPUT/.beam-etl-cache

    def __post_init__(self):
        if not self.output:
            raise ValueError("--output is required")
        if not self.sources:
            raise ValueError("give at least one source")
        kinds = [type(settings) for settings in self.sources]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"one settings object per kind of source, got {list(self.sources)}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"--image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"--resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.resize == "pad" and self.mask_values is not None and PAD_MASK_VALUE in self.mask_values:
            raise ValueError(f"--mask_values {list(self.mask_values)} holds {PAD_MASK_VALUE}, the value "
                             "--resize pad gives the padding: it cannot also be a class")
        for name, parse in FLAG_PARSERS.items():  # (a value is taken from code as from its flag's text)
            value = getattr(self, name)
            if value is None and name in ("num_shards", "mask_values"):
                continue
            try:
                parsed = parse(_FLAG_TEXT.get(name, str)(value))
            except (TypeError, ValueError) as error:
                raise ValueError(f"--{name} {value!r}: {error}") from None
            if parsed != value:
                raise ValueError(f"--{name} {value!r}: its flag would read {parsed!r}")
        for field in dataclasses.fields(self):
            if field.type == "bool" and not isinstance(getattr(self, field.name), bool):
                raise ValueError(f"{field.name} {getattr(self, field.name)!r}: expected True or False")

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split this run may write: each gets its files, even if empty."""
        names = {name for name, fraction in self.split_fractions if fraction > 0}
        for settings in self.sources:
            names.update(settings.splits(self))  # the splits a source's inputs name themselves
        return tuple(name for name in SPLITS if name in names)

    @property
    def mask_format(self) -> str:
        """:func:`mask_format` of ``--image_format``."""
        return mask_format(self.image_format)

    def chain_settings(self, split: str = "train") -> ChainSettings:
        """The :class:`ChainSettings` of an input of ``split``."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(ChainSettings)}
        if split != "train":
            values.update(_NEUTRAL_OUTSIDE_TRAINING)
        return ChainSettings(**values)

    @property
    def shard_bytes(self) -> int:
        """``--shard_size_mb`` in bytes."""
        return int(self.shard_size_mb * (1 << 20))

    def image_info(self) -> dict:
        """Size and encodings of every written record: the manifest's ``image`` entry."""
        height, width = self.image_size
        info = {"height": height, "width": width, "channels": schema.CHANNELS,
                "format": self.image_format, "mask_format": self.mask_format, "resize": self.resize}
        if self.resize == "pad":
            info["mask_ignore_value"] = PAD_MASK_VALUE  # the padding's: no class
        return info

    def source(self, settings_type):
        """This run's settings of one kind of source, or None when it reads none of that kind."""
        return next((settings for settings in self.sources if isinstance(settings, settings_type)), None)

    def flags(self) -> dict:
        """The settings as JSON-ready values, for the manifest: each source's fields among the
        others, as its flags are."""
        values = {}
        for name, value in dataclasses.asdict(self).items():
            if name == "sources":
                for settings in value:
                    values.update(settings)
            else:
                values[name] = value
        return json_ready(values)


# The parser of each setting's flag text (its argparse type, with its bounds): JobConfig parses
# a value built in code from the text its flag would hold (``_FLAG_TEXT``, else ``str``) and
# refuses it unless it reads back the same, so code and command line accept the same values.
FLAG_PARSERS = {
    "image_size": parse_image_size,
    "jpeg_quality": jpeg_quality,
    "max_pixels": positive_int,
    "mask_values": parse_mask_values,
    "augment_copies": augment_copies,
    "seed": int,
    "val_fraction": fraction_below_one,
    "split_fractions": parse_split_fractions,
    "num_shards": num_shards,
    "shard_size_mb": shard_size_mb,
    "max_reject_fraction": fraction,
}
_FLAG_TEXT = {
    "image_size": lambda size: "x".join(map(str, size)),
    "mask_values": lambda values: ",".join(map(str, values)),
    "split_fractions": lambda fractions: ",".join(f"{name}={fraction!r}" for name, fraction in fractions),
}


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [json_ready(v) for v in value]
    return value
