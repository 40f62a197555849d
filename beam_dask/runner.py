"""``DaskRunner``: Beam's Dask runner (``apache_beam.runners.dask``) with the fixes listed in
this package's README.md: the translation of a pipeline into dask bags, run on a
dask.distributed cluster."""

from __future__ import annotations

import operator

import dask
import dask.bag
from apache_beam import pvalue
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.dask import dask_runner as upstream
from apache_beam.runners.dask import transform_evaluator as evaluator
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.combiners import LiftedCombinePerKey
from apache_beam.transforms.core import CombinePerKey, ParDo

from beam_dask.cluster import scheduler_refusal
from beam_dask.shuffle import GroupByKey, elements_of
from beam_dask.stages import Stage, Step, build_order, leaf_transforms, plan_stages, run_stage

# ParDos are not translated one by one: they run in fused stages (fix 10, ``_Translator``).
_TRANSLATIONS = {**{kind: op for kind, op in evaluator.TRANSLATIONS.items() if kind is not ParDo},
                 evaluator._GroupByKeyOnly: GroupByKey}  # pylint: disable=protected-access


def _window_fn(main_input):
    return main_input.windowing.windowfn if hasattr(main_input, "windowing") else None


class _Translator:
    """Upstream's DaskBagVisitor, with ParDos in fused stages (fix 10) that hand each reader
    only its own output (fix 1)."""

    def __init__(self, bag_kwargs, pipeline):
        self.bags = {}  # AppliedPTransform -> its bag (a stage: its first step)
        self.consumed = set()
        self._bag_kwargs = bag_kwargs
        nodes = leaf_transforms(pipeline)
        self._stages = plan_stages(nodes)
        self._position = {node: i + 1 for i, node in enumerate(nodes)}
        for unit in build_order(nodes, self._stages):
            if isinstance(unit, Stage):
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
            steps.append(Step(node.full_label, node.transform.fn, tuple(args), kwargs, _window_fn(main),
                               parent, main.tag if parent is not None else None, [spec for spec, _ in sides]))
            side_bags.extend(bag for _, bag in sides)
        exports = [(index[pcoll.producer], pcoll.tag) for pcoll in stage.exports]
        main = next(iter(first.main_inputs.values()))
        name = first.full_label if len(stage.nodes) == 1 else f"{first.full_label}+{len(stage.nodes) - 1}"
        bag = self.bag_of(main).map_partitions(
            run_stage, steps, exports, *[elements_of(bag) for bag in side_bags], token=name)
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
    (fix 8); the DirectRunner's own override, for the default windowing."""

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
            state = super().wait_until_finish(duration)
            # Fix 11: upstream's as_completed(with_results=True) yields a cancelled task's
            # CancelledError rather than raising it, and the job read as done.
            unfinished = sorted({future.status for future in self.futures} - {"finished"})
            if state == PipelineState.DONE and unfinished:
                self._state = PipelineState.FAILED
                raise RuntimeError(f"the job's tasks on the Dask cluster were {' and '.join(unfinished)} before "
                                   "they finished (the cluster restarted, or lost its scheduler or the client)")
            return state
        finally:  # the job is over: let the cluster go without the client trying to reconnect
            self.client.close()


class DaskRunner(upstream.DaskRunner):
    """Runs a pipeline on a dask.distributed cluster (``--dask_client_address``)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist  # pylint: disable=import-outside-toplevel

        dask_options = options.view_as(upstream.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = upstream.DaskOptions._extract_bag_kwargs(dask_options)  # pylint: disable=protected-access
        # Fix 12: the client waits for ever where a service that is not Dask's takes the
        # connection, and a worker's address fails the job only once the client is running.
        address = dask_options.get("address")
        refused = scheduler_refusal(address, dask_options.get("timeout")) if isinstance(address, str) else None
        if refused is not None:
            raise RuntimeError(f"--dask_client_address {address!r}: {refused}")
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
