"""Fused stages (fix 10): the ParDos that read one another's output run element by element in one
task per partition, keeping ``finish_bundle`` outputs (fix 2) and taking side inputs as task
inputs (fix 4). :func:`plan_stages` groups a pipeline's ParDos; :func:`run_stage` runs one
stage over a partition."""

from __future__ import annotations

import collections
import dataclasses
import heapq

from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask import transform_evaluator as evaluator
from apache_beam.transforms.core import DoFn, ParDo
from apache_beam.transforms.sideinputs import SideInputMap

from beam_dask.memory import release_free_memory
from beam_dask.shuffle import Elements


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
class Step:
    """What a task needs to run one ParDo of a stage (the DoFn and its arguments)."""

    label: str
    fn: DoFn
    args: tuple
    kwargs: dict
    window_fn: object
    parent: int | None  # the stage's step whose output it reads; None for the first
    parent_tag: str | None
    side_specs: list  # (view class, view options, window mapping) of each side input


def run_stage(items, steps, exports, *side_values) -> tuple[Elements, ...]:
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


def is_pardo(node) -> bool:
    return node.transform.__class__ is ParDo


@dataclasses.dataclass(eq=False)
class Stage:
    """ParDos that run together, element by element, in one task per partition (fix 10): the
    first reads its input from outside the stage, each other one reads the output of a step of
    the stage, and none has a side input computed from the stage (that would be a cycle)."""

    nodes: list
    exports: list = dataclasses.field(default_factory=list)  # PCollections read outside the stage
    outputs: dict = dataclasses.field(default_factory=dict)  # PCollection -> its bag, once built


def leaf_transforms(pipeline) -> list:
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
    :class:`Stage`. A ParDo joins the stage of the ParDo whose output it reads unless one of
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
    for node in filter(is_pardo, nodes):
        main = [value for value in node.inputs if isinstance(value, pvalue.PCollection)]
        stage = stages.get(main[0].producer) if len(main) == 1 else None
        sides = set().union(*({side.pvalue.producer, *upstream_of[side.pvalue.producer]} for side in node.side_inputs))
        if stage is not None and sides.isdisjoint(stage.nodes):
            stage.nodes.append(node)
            stages[node] = stage
        else:
            stages[node] = Stage([node])
    for node, stage in stages.items():
        for pcoll in node.outputs.values():
            if any(side or stages.get(reader) is not stage for reader, side in readers[pcoll]):
                stage.exports.append(pcoll)
    return stages


def build_order(nodes, stages) -> list:
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
