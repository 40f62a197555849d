"""Beam's DaskRunner with five translation bugs of Beam 2.77 fixed, two memory fixes, lifting,
whole partitions on the wire, and fused stages.

``--runner DaskRunner`` (or ``--dask_local_workers N``) runs the job with this runner: the
same translation of a Beam pipeline into ``dask.bag`` operations, scheduled by a
``dask.distributed`` cluster, as ``apache_beam.runners.dask.dask_runner.DaskRunner``, with
these differences, each of which made the job's output differ from the DirectRunner's:

1. Tagged outputs. Upstream puts every output of a multi-output ParDo in one bag and hands
   all of it to the consumer of any one output. tf.Transform splits each analyzer's results
   by tag (``ExtractOutputs``), so its statistics came out scrambled. Here a consumer reads
   only its own tag.
2. ``finish_bundle`` outputs. Upstream collects a bundle's outputs before it calls
   ``finish_bundle``, so whatever a DoFn emits there is lost; ``beam.BatchElements`` emits its
   last batch there, and tf.Transform and tfx-bsl batch with it. Here they are kept.
3. Leaves. Upstream computes only the bag of the last transform visited; a branch that does
   not feed it never runs. Here every bag that no step consumes is computed, and its elements
   dropped on the worker: tf.Transform's instrumentation leaves pass the whole training split
   through, which the client would otherwise gather and the workers hold. The leaves are
   handed to the cluster as one collection: as a list of collections, dask.distributed ran a
   step that feeds several leaves once for each (the job decoded every image three times).
4. Side inputs. Upstream hands each task that reads a side input the side input's graph, and
   the task computes it: everything upstream of it ran once per reading task. tf.Transform's
   SavedModel-writing steps then ran many times, each in a new temporary directory, and its
   DoFns saw different paths. Here a side input's elements are an input of the reading tasks
   in the one graph the job computes, so every step runs once. (Persisting side inputs as
   they are met, this module's first fix, was not enough: a task upstream of both a persisted
   side input and the final graph could be computed for each (dask warned "Detected
   different run_spec" for them), and with more partitions tf.Transform's vocabulary file was
   at times missing when read: Beam's file sinks delete and rename in their finalize steps.)
5. Parallelism. Upstream's GroupByKey keeps the number of partitions of its input; a job
   that starts from a handful of globs (one partition each) then runs everything on one or
   two workers, however many the cluster has, and holds ever larger partitions as the input
   grows. ``Bag.groupby(npartitions=...)`` does not help: only the disk-based shuffle honours
   it, and dask.distributed uses the task-based one. Here a shuffle's output is split into
   ``--dask_npartitions`` partitions (fix 9 shuffles straight into them), by default four per worker.

Two more keep a worker's memory from growing with the input (it grew by about 8 KB per image):

6. Order. Dask orders tasks by its own heuristic, which ran a cheap reader of the decoded
   examples (the rejections branch, into a one-key GroupByKey) only after every partition had
   been decoded, so every partition's examples stayed in memory until then. Here each step's
   tasks carry the step's position in the pipeline as their dask priority, later steps first
   (a fused stage's, fix 10, its first step's): a worker reads a partition before it decodes
   the one after next. (The graph goes to the cluster without dask's low-level fusion: it
   drops the priority annotations.)
7. Freed memory. glibc keeps what a bundle frees between long-lived small blocks; after each
   bundle the runner hands it back (``malloc_trim``, :func:`release_free_memory`).

And one that every other runner does:

8. Combiner lifting. Upstream runs ``CombinePerKey`` (and so ``CombineGlobally``, ``Count``)
   as written: a GroupByKey of every element, then the combine. Each of the job's counts of
   the inputs shuffled every record through the task-based shuffle, and its grouped tasks ran
   in the job's tail, one worker at a time. Here, as on the DirectRunner, Dataflow and the
   portable runners, each bundle combines its elements first and only the accumulators are
   shuffled (Beam's own ``LiftedCombinePerKey``).

And one for the transfers between workers:

9. Partitions travel whole. A worker sends a task's result to another with ``to_serialize``,
   which serializes a plain ``list`` one element at a time (each with its own header and
   frames), about 0.1 ms per element: at 16,000 images the shuffle that pairs images with
   masks spent 5 s sending two 5 MB pieces, and shuffles and hand-overs took 11 s of the two
   workers' 79 s. Here every partition the runner makes is an :class:`Elements`, a ``list``
   that dask pickles in one piece (16,000 elements: 1.7-3.7 s -> 0.5-0.9 s), and a GroupByKey
   is a single-stage shuffle of such pieces straight into ``--dask_npartitions`` partitions
   (dask's own, ``Bag.groupby``, makes plain lists, and its output then needed the
   ``repartition`` of fix 5). Beyond ``_MAX_SHUFFLE_PIECES`` pieces (inputs x outputs) it
   falls back to dask's multi-stage shuffle, which makes fewer tasks.

And one more that every other runner does:

10. Fusion. Upstream runs each ParDo as tasks of its own, one per partition, and each task's
    result is the step's whole output for that partition, held until the next step has read
    it: the job's decoded examples, then tf.Transform's batches of them, a partition at a
    time, so a worker's memory grew with the partition size (and so with the dataset at a
    fixed number of partitions). Here, as on the DirectRunner and Dataflow, ParDos that read
    one another's output run in one task per partition (a stage, :func:`plan_stages`): each
    element goes through all of the stage's steps as it is made, and a task keeps only the
    outputs that something outside the stage reads (a shuffle, a Flatten, a side input), one
    partition each. A ParDo whose side input is computed from the stage starts a stage of its
    own (the stage would wait for itself); other side inputs are inputs of the stage's tasks.
    So the job's whole per-image path, from pairing to tf.Transform's per-bundle analyzer
    accumulators, is one stage, and what crosses its boundary is small: source records,
    rejections, spill-file pointers, accumulators. Stages are built in dependency order
    (:func:`_build_order`), since a later step may read a side input applied after the first.

The job itself has no Dask-only code path: where Beam features behave differently on Dask
the job uses what works on every runner (two Filters instead of tagged outputs, spill writes
that emit from ``process``), and these fixes are for what tf.Transform needs. They are the
kind of fix to offer upstream; the module can go once Beam's runner has them.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import dataclasses
import functools
import heapq
import operator

import dask
import dask.bag
from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor, PTransformOverride
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import dask_runner as upstream
from apache_beam.runners.dask import transform_evaluator as evaluator
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.transforms.combiners import LiftedCombinePerKey
from apache_beam.transforms.core import CombinePerKey, DoFn, ParDo
from apache_beam.transforms.sideinputs import SideInputMap
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

NAME = f"{__name__}.DaskRunner"

# A single-stage shuffle makes one task per (input, output) partition pair; beyond this many
# (64 x 64: 16 workers at four partitions each) dask's multi-stage shuffle makes fewer.
_MAX_SHUFFLE_PIECES = 64 * 64


class Elements(list):
    """A partition of a bag: a ``list`` that dask.distributed pickles in one piece when it
    moves between workers; a plain ``list`` it sends element by element (fix 9)."""

    __slots__ = ()


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Hands the memory that glibc holds free, wherever it lies in its heaps, back to the OS
    (fix 7). ``free`` only returns the top of a heap; blocks freed between long-lived small
    ones (elements waiting for the next shuffle) stay with the process. ``malloc_trim(0)``
    returns every free page, in well under a millisecond. Returns whether it could.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class _Fanout(Receiver):
    """One output of a step in a fused stage: each element goes on, at once, to the steps of the
    stage that read it, and is kept (bare, as the runner's bags hold elements) only where a step
    outside the stage reads it too."""

    def __init__(self):
        self.invokers = []
        self.elements = None

    def receive(self, windowed_value):
        if self.elements is not None:
            self.elements.append(windowed_value.value)
        for invoker in self.invokers:
            invoker.invoke_process(windowed_value)


class _Outputs(dict):
    """A step's receivers by tag (None: the main output); an output nothing reads is dropped."""

    def __missing__(self, tag):
        return self.setdefault(tag, _Fanout())


@dataclasses.dataclass
class _Step:
    """What a task needs to run one ParDo of a stage (the DoFn and its arguments)."""

    label: str
    fn: DoFn
    args: tuple
    kwargs: dict
    window_fn: object
    parent: int | None  # the stage's step whose output it reads; None for the first
    parent_tag: str | None
    side_specs: list  # (view class, view options, window mapping) of each side input


def _run_stage(items, steps, exports, *side_values) -> tuple[Elements, ...]:
    """Runs a stage's ParDos over one partition (a bundle), element by element through all of
    them (fix 10), and returns the outputs that steps outside the stage read, one
    :class:`Elements` per ``exports`` entry ((step, tag)). ``finish_bundle`` outputs are kept
    (fix 2); the steps' side inputs come in as task arguments, in step order (fix 4)."""
    side_values = iter(side_values)
    outputs = [_Outputs() for _ in steps]
    results = tuple(Elements() for _ in exports)
    for (index, tag), elements in zip(exports, results):
        outputs[index][tag].elements = elements
    invokers = []
    for index, step in enumerate(steps):
        handler = _OutputHandler(window_fn=step.window_fn, main_receivers=outputs[index][None],
                                 tagged_receivers=outputs[index], per_element_output_counter=None,
                                 output_batch_converter=None, process_yields_batches=False,
                                 process_batch_yields_elements=False)
        invoker = DoFnInvoker.create_invoker(
            DoFnSignature(step.fn), handler, context=DoFnContext(step.label, state=None),
            input_args=list(step.args), input_kwargs=step.kwargs, user_state_context=None,
            bundle_finalizer_param=DoFn.BundleFinalizerParam(),
            side_inputs=[SideInputMap(view_class, view_options,
                                      evaluator.DaskBagWindowedIterator(next(side_values), side_window_fn))
                         for view_class, view_options, side_window_fn in step.side_specs])
        if step.parent is not None:
            outputs[step.parent][step.parent_tag].invokers.append(invoker)
        invokers.append(invoker)
    for invoker in invokers:
        invoker.invoke_setup()
        invoker.invoke_start_bundle()
    first, window_fn = invokers[0], steps[0].window_fn
    for item in items:
        first.invoke_process(evaluator.get_windowed_value(item, window_fn))
    for invoker in invokers:  # in pipeline order: what a step emits here reaches the steps after it
        invoker.invoke_finish_bundle()
    for invoker in invokers:
        invoker.invoke_teardown()
    release_free_memory()  # what the bundle freed goes back to the OS, not only to this process
    return results


def _concatenate(*partitions) -> Elements:
    return Elements(element for partition in partitions for element in partition)


def _elements(bag) -> Delayed:
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


class _GroupByKey(evaluator.GroupByKey):
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


# ParDos are not translated one by one: they run in fused stages (fix 10, ``_Translator``).
_TRANSLATIONS = {**{kind: op for kind, op in evaluator.TRANSLATIONS.items() if kind is not ParDo},
                 evaluator._GroupByKeyOnly: _GroupByKey}  # pylint: disable=protected-access


def _is_pardo(node) -> bool:
    return node.transform.__class__ is ParDo


@dataclasses.dataclass(eq=False)
class _Stage:
    """ParDos that run together, element by element, in one task per partition (fix 10): the
    first reads its input from outside the stage, each other one reads the output of a step of
    the stage, and none has a side input computed from the stage (that would be a cycle)."""

    nodes: list
    exports: list = dataclasses.field(default_factory=list)  # PCollections read outside the stage
    outputs: dict = dataclasses.field(default_factory=dict)  # PCollection -> its bag, once built


def _leaf_transforms(pipeline) -> list:
    nodes = []

    class _Collect(PipelineVisitor):
        def visit_transform(self, transform_node):
            nodes.append(transform_node)

    pipeline.visit(_Collect())
    return nodes


def _producers(node) -> list:
    """The transforms whose outputs ``node`` reads, as main or side input."""
    values = [*node.inputs, *(side.pvalue for side in node.side_inputs)]
    return [value.producer for value in values if isinstance(value, pvalue.PCollection)]


def plan_stages(nodes) -> dict:
    """Each ParDo of ``nodes`` (a pipeline's transforms in the order it applied them) -> its
    :class:`_Stage`. A ParDo joins the stage of the ParDo whose output it reads unless one of
    its side inputs is computed from that stage. A stage exports every output that a step
    outside it reads, or that is a side input."""
    readers = collections.defaultdict(list)  # PCollection -> [(node, whether as a side input)]
    upstream_of = {}  # node -> every node it depends on, through main and side inputs
    for node in nodes:
        for value in node.inputs:
            if isinstance(value, pvalue.PCollection):
                readers[value].append((node, False))
        for side in node.side_inputs:
            readers[side.pvalue].append((node, True))
        upstream_of[node] = set().union(*({producer, *upstream_of.get(producer, ())} for producer in _producers(node)))
    stages = {}
    for node in filter(_is_pardo, nodes):
        main = [value for value in node.inputs if isinstance(value, pvalue.PCollection)]
        stage = stages.get(main[0].producer) if len(main) == 1 else None
        sides = set().union(*({side.pvalue.producer, *upstream_of[side.pvalue.producer]} for side in node.side_inputs))
        if stage is not None and sides.isdisjoint(stage.nodes):
            stage.nodes.append(node)
            stages[node] = stage
        else:
            stages[node] = _Stage([node])
    for node, stage in stages.items():
        for pcoll in node.outputs.values():
            if any(side or stages.get(reader) is not stage for reader, side in readers[pcoll]):
                stage.exports.append(pcoll)
    return stages


def _build_order(nodes, stages) -> list:
    """Stages and the other transforms, each after everything it reads, otherwise in the
    pipeline's order. (A stage's later steps may read side inputs that the pipeline applied
    after its first step, and after transforms that read the stage.)"""
    units = list({id(unit): unit for unit in (stages.get(node, node) for node in nodes)}.values())
    first = {id(unit): i for i, unit in enumerate(units)}
    needs = {id(unit): {id(stages.get(producer, producer))
                        for node in getattr(unit, "nodes", [unit]) for producer in _producers(node)} - {id(unit)}
             for unit in units}
    waiting = collections.defaultdict(list)
    for unit in units:
        for need in needs[id(unit)]:
            waiting[need].append(unit)
    ready = [first[key] for key, need in needs.items() if not need]
    heapq.heapify(ready)
    order = []
    while ready:
        unit = units[heapq.heappop(ready)]
        order.append(unit)
        for after in waiting[id(unit)]:
            needs[id(after)].discard(id(unit))
            if not needs[id(after)]:
                heapq.heappush(ready, first[id(after)])
    assert len(order) == len(units), "the pipeline's transforms form a cycle"
    return order


def _window_fn(main_input):
    return main_input.windowing.windowfn if hasattr(main_input, "windowing") else None


class _Translator:
    """Upstream's DaskBagVisitor, with ParDos in fused stages (fix 10) that hand each reader
    only its own output (fix 1)."""

    def __init__(self, bag_kwargs, pipeline):
        self.bags = {}  # AppliedPTransform -> its bag (a stage: its first step)
        self.consumed = set()
        self._bag_kwargs = bag_kwargs
        nodes = _leaf_transforms(pipeline)
        self._stages = plan_stages(nodes)
        self._position = {node: i + 1 for i, node in enumerate(nodes)}
        for unit in _build_order(nodes, self._stages):
            if isinstance(unit, _Stage):
                with dask.annotate(priority=self._position[unit.nodes[0]]):  # fix 6: later steps first
                    self._build(unit)
            else:
                with dask.annotate(priority=self._position[unit]):
                    self._translate(unit)

    def bag_of(self, pcoll):
        producer = pcoll.producer
        stage = self._stages.get(producer)
        if stage is not None:
            self.consumed.add(stage.nodes[0])
            return stage.outputs[pcoll]
        self.consumed.add(producer)
        return self.bags[producer]

    def _side_inputs(self, node):
        """Fix 4: (how to view it, its bag) for each side input of ``node``."""
        return [((type(side), side._view_options(), side._window_mapping_fn),  # pylint: disable=protected-access
                 self.bag_of(side.pvalue))
                for side in node.side_inputs]

    def _translate(self, transform_node):
        op_class = _TRANSLATIONS.get(transform_node.transform.__class__, evaluator.NoOp)
        op = op_class(transform_node, bag_kwargs=self._bag_kwargs)
        op_kws = {"input_bag": None, "side_inputs": None}
        inputs = list(transform_node.inputs)
        if inputs:
            bags = [None if isinstance(value, pvalue.PBegin) else self.bag_of(value) for value in inputs
                    if isinstance(value, pvalue.PBegin) or value.producer in self.bags
                    or value.producer in self._stages]
            single = len(bags) == 1 and not isinstance(op, evaluator.Flatten)
            op_kws["input_bag"] = bags[0] if single else bags
        if transform_node.side_inputs:
            op_kws["side_inputs"] = self._side_inputs(transform_node)
        self.bags[transform_node] = op.apply(**op_kws)

    def _build(self, stage):
        first = stage.nodes[0]
        index = {node: i for i, node in enumerate(stage.nodes)}
        steps, side_bags = [], []
        for node in stage.nodes:
            args, kwargs = node.transform.raw_side_inputs
            main = next(iter(node.main_inputs.values()))
            parent = index[main.producer] if node is not first else None
            sides = self._side_inputs(node)
            steps.append(_Step(node.full_label, node.transform.fn, tuple(args), kwargs, _window_fn(main),
                               parent, main.tag if parent is not None else None, [spec for spec, _ in sides]))
            side_bags.extend(bag for _, bag in sides)
        exports = [(index[pcoll.producer], pcoll.tag) for pcoll in stage.exports]
        main = next(iter(first.main_inputs.values()))
        name = first.full_label if len(stage.nodes) == 1 else f"{first.full_label}+{len(stage.nodes) - 1}"
        bag = self.bag_of(main).map_partitions(
            _run_stage, steps, exports, *[_elements(bag) for bag in side_bags], token=name)
        for i, pcoll in enumerate(stage.exports):
            stage.outputs[pcoll] = bag.map_partitions(
                operator.getitem, i, token=f"{pcoll.producer.full_label}.{pcoll.tag or 'main'}")
        self.bags[first] = bag

    def leaves(self):
        return [bag for node, bag in self.bags.items() if node not in self.consumed and bag is not None]


def _nothing(partition):
    del partition
    return []


class _LiftCombiners(PTransformOverride):
    """``CombinePerKey`` as a combine per bundle, a shuffle of the accumulators, and a merge
    (fix 8); the DirectRunner's own override, for the windowing this job uses."""

    def matches(self, applied_ptransform):
        transform = applied_ptransform.transform
        return isinstance(transform, CombinePerKey) and applied_ptransform.inputs[0].windowing.is_default()

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        transform = applied_ptransform.transform
        try:
            return LiftedCombinePerKey(transform.fn, transform.args, transform.kwargs)
        except NotImplementedError:  # ten or more side inputs: Beam's lifting packs fewer
            return transform


class _Result(upstream.DaskRunnerResult):
    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:  # the job is over: let the cluster go without the client trying to reconnect
            self.client.close()


# Worker environment for the clusters the job starts itself (an explicit value in the
# environment wins, as with dask's own settings):
_WORKER_ENVIRON = {
    # dask.distributed's default, 65536 (hand freed memory back to the OS sooner), also pins
    # glibc's mmap threshold at 128 KiB: every decoded photo became a fresh mmap, page-faulted
    # in and unmapped again, and the per-image steps ran about a quarter slower
    # (BENCHMARKS.md). The workers hold no dataset, so they keep glibc's defaults.
    "MALLOC_TRIM_THRESHOLD_": None,
    # TensorFlow sizes its thread pools to the machine, not to the worker: a one-thread worker
    # running tf.Transform's graphs used two cores, and workers sharing a machine fought over
    # them. One thread each, as dask already does for OpenMP/MKL/OpenBLAS.
    "TF_NUM_INTRAOP_THREADS": 1,
    "TF_NUM_INTEROP_THREADS": 1,
}


def local_cluster(workers: int):
    """A dask.distributed ``LocalCluster`` of ``workers`` processes with one thread each, their
    environment set for this job (``_WORKER_ENVIRON``; README.md says how to set the same on a
    cluster of your own)."""
    from distributed import LocalCluster  # pylint: disable=import-outside-toplevel  # the [dask] extra

    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value
                          for name, value in _WORKER_ENVIRON.items()}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=":0")


class DaskRunner(upstream.DaskRunner):
    """Runs a pipeline on a dask.distributed cluster (``--dask_client_address``)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist  # pylint: disable=import-outside-toplevel

        dask_options = options.view_as(upstream.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = upstream.DaskOptions._extract_bag_kwargs(dask_options)  # pylint: disable=protected-access
        client = ddist.Client(**dask_options)
        # Lifting first: the GroupByKey it introduces is then translated like any other.
        pipeline.replace_all([_LiftCombiners(), *dask_overrides()])
        workers = len(client.scheduler_info().get("workers", {})) or 1
        # A few tasks per worker after every shuffle: enough to keep them all busy and
        # balanced, few enough that per-task overhead stays small.
        translated = _Translator({**bag_kwargs, "shuffle_partitions": max(2, 4 * workers)}, pipeline)
        # Fix 3: every leaf, not only the last; their elements are dropped where they are made,
        # so neither the workers keep them nor the client gathers them. The leaves go to the
        # cluster as one collection: computed as a list of collections, a step that feeds
        # several leaves ran once for each of them (the decoding step three times).
        job = dask.bag.concat([leaf.map_partitions(_nothing) for leaf in translated.leaves()])
        # Without dask's own fusion (fix 6): it would drop the steps' priorities. The runner's
        # stages (fix 10) already run a stage's steps in one task.
        return _Result(client, [client.compute(job, optimize_graph=False)])
