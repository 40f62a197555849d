"""GroupByKey on dask bags: a single-stage shuffle into a chosen number of partitions (fix 5),
partitions that travel between workers in one piece (fix 9)."""

from __future__ import annotations

import operator

import dask
import dask.bag
from apache_beam.runners.dask import transform_evaluator as evaluator
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

# A single-stage shuffle makes one task per (input, output) partition pair; beyond this many
# (64 x 64: 16 workers at four partitions each) dask's multi-stage shuffle makes fewer.
_MAX_SHUFFLE_PIECES = 64 * 64


class Elements(list):
    """A partition of a bag: a ``list`` that dask.distributed pickles in one piece when it
    moves between workers; a plain ``list`` it sends element by element (fix 9)."""

    __slots__ = ()


def _concatenate(*partitions) -> Elements:
    return Elements(element for partition in partitions for element in partition)


def elements_of(bag) -> Delayed:
    """All of ``bag``'s elements as one graph node, without renaming its tasks (an optimized
    copy would give the same tasks new names, and dask would run them twice)."""
    return dask.delayed(_concatenate)(*bag.to_delayed(optimize_graph=False))


def _bucket(key, count: int) -> int:
    """The output partition of ``key``: the same in every worker process (dask's own token,
    as its shuffles use; Python's ``hash`` of a string differs between processes)."""
    return int(tokenize(key), 16) % count


def _split(partition, count: int) -> list[Elements]:
    """``(key, windowed value)`` items -> ``count`` pieces by key."""
    pieces = [Elements() for _ in range(count)]
    for item in partition:
        pieces[_bucket(item[0], count)].append(item)
    return pieces


def _group(*pieces) -> Elements:
    """One output partition's pieces, from every input partition in order -> ``(key, [values])``."""
    groups = {}
    for piece in pieces:
        for key, value in piece:
            groups.setdefault(key, []).append(evaluator.defenestrate(value))
    return Elements(groups.items())


def shuffle(bag, count: int):
    """GroupByKey of a bag of ``(key, windowed value)`` into ``count`` partitions of
    ``(key, [values])``: each input partition split by key, each piece (an :class:`Elements`)
    taken by the one task that groups its output partition (fix 9)."""
    token = tokenize(bag.name, count)
    split, piece, group = f"group-by-key-split-{token}", f"group-by-key-piece-{token}", f"group-by-key-{token}"
    layer = {}
    for i in range(bag.npartitions):
        layer[(split, i)] = (_split, (bag.name, i), count)
        for j in range(count):
            layer[(piece, i, j)] = (operator.getitem, (split, i), j)
    for j in range(count):
        layer[(group, j)] = (_group, *[(piece, i, j) for i in range(bag.npartitions)])
    return dask.bag.Bag(HighLevelGraph.from_collections(group, layer, dependencies=[bag]), group, count)


class GroupByKey(evaluator.GroupByKey):
    """Upstream's GroupByKey, spreading its output over ``shuffle_partitions`` (fix 5), its
    pieces sent whole (fix 9)."""

    def apply(self, input_bag, side_inputs=None):
        npartitions = self.bag_kwargs.get("npartitions") or self.bag_kwargs["shuffle_partitions"]
        if input_bag.npartitions * npartitions <= _MAX_SHUFFLE_PIECES:
            return shuffle(input_bag, npartitions)

        def key(item):
            return item[0]

        def value(item):
            k, grouped = item
            return k, [evaluator.defenestrate(element[1]) for element in grouped]

        # groupby keeps its input's partition count with the task-based shuffle: split its output.
        return input_bag.groupby(key).map(value).repartition(npartitions)
