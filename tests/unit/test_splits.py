import collections

from beam_etl.beam.sources import oxford
from beam_etl.config import JobConfig
from beam_etl.splits import TRAINVAL, assign_split


def _config(**kwargs):
    return JobConfig(output="o", sources=(oxford.Settings(("r",)),), **kwargs)


def test_fractions_are_honoured_and_stable():
    config = _config(split_fractions=(("train", 0.7), ("val", 0.2), ("test", 0.1)))
    keys = [f"img_{i}" for i in range(20000)]
    counts = collections.Counter(assign_split(key, None, config) for key in keys)
    assert abs(counts["train"] / 20000 - 0.7) < 0.015
    assert abs(counts["val"] / 20000 - 0.2) < 0.015
    assert abs(counts["test"] / 20000 - 0.1) < 0.015
    assert [assign_split(key, None, config) for key in keys[:100]] == \
           [assign_split(key, None, config) for key in keys[:100]]


def test_source_split_wins_and_trainval_is_divided():
    config = _config(val_fraction=0.25)
    assert assign_split("k", "test", config) == "test"
    held_out = [assign_split(f"k{i}", TRAINVAL, config) for i in range(8000)]
    assert set(held_out) == {"train", "val"}
    assert abs(held_out.count("val") / 8000 - 0.25) < 0.02
    assert {assign_split(f"k{i}", TRAINVAL, _config(val_fraction=0.0)) for i in range(100)} == {"train"}


def test_zero_fraction_split_is_never_chosen():
    config = _config(split_fractions=(("train", 1.0), ("val", 0.0), ("test", 0.0)))
    assert {assign_split(f"k{i}", None, config) for i in range(500)} == {"train"}
