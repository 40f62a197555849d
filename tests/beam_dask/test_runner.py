"""beam_dask's fixes, each shown on a real dask.distributed cluster of 2 worker processes."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import apache_beam as beam
import dask
import dask.bag
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from distributed import Client
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import dumps, loads, to_serialize

from beam_dask import local_cluster, shuffle
from beam_dask.cluster import scheduler_refusal

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scheduler_address():
    with local_cluster(2) as cluster:
        yield cluster.scheduler_address


def _on_cluster(address, *flags):
    # Flags, not keyword arguments: PipelineOptions(dask_client_address=...) is silently ignored
    # (the option's dest is "address"), and the runner then starts a cluster of its own.
    return PipelineOptions(["--runner", "beam_dask.DaskRunner", "--dask_client_address", address, *flags])


class _TagAndFlush(beam.DoFn):
    """Even numbers to the main output, odd ones tagged; the bundle's count from finish_bundle."""

    def start_bundle(self):
        self._count = 0

    def process(self, number):
        self._count += 1
        yield number if number % 2 == 0 else beam.pvalue.TaggedOutput("odd", number)

    def finish_bundle(self):
        yield beam.utils.windowed_value.WindowedValue(
            ("seen", self._count), 0, [beam.transforms.window.GlobalWindow()])


def _runner_fixture_pipeline(address, expected_odd):
    options = _on_cluster(address)
    with beam.Pipeline(options=options) as pipeline:
        numbers = pipeline | beam.Create(list(range(10)))
        outputs = numbers | beam.ParDo(_TagAndFlush()).with_outputs("odd", main="even")
        total = numbers | "Total" >> beam.CombineGlobally(sum)
        assert_that(outputs.odd, equal_to(expected_odd), label="OddOnly")
        seen = (outputs.even
                | "Seen" >> beam.Filter(lambda x: isinstance(x, tuple))
                | "Counts" >> beam.Map(lambda x: x[1])
                | "SumSeen" >> beam.CombineGlobally(sum))
        assert_that(seen, equal_to([10]), label="FinishBundleKept")
        scaled = numbers | "Scale" >> beam.Map(lambda x, t: x * t, t=beam.pvalue.AsSingleton(total))
        assert_that(scaled, equal_to([x * 45 for x in range(10)]), label="SideInput")


def test_runner_keeps_tags_finish_bundle_outputs_side_inputs_and_every_branch(scheduler_address):
    _runner_fixture_pipeline(scheduler_address, [1, 3, 5, 7, 9])
    # Every assert_that is a leaf branch: a wrong expectation must fail the run, so they all ran.
    with pytest.raises(Exception, match="BeamAssertException|Failed assert"):
        _runner_fixture_pipeline(scheduler_address, [1, 3])


class _CountBundles(beam.DoFn):
    """Emits how many bundles (Dask partitions) it saw, and how many elements."""

    def start_bundle(self):
        self._elements = 0

    def process(self, element):
        self._elements += 1

    def finish_bundle(self):
        yield beam.utils.windowed_value.WindowedValue(
            (1, self._elements), 0, [beam.transforms.window.GlobalWindow()])


@pytest.mark.parametrize("max_pieces", [shuffle._MAX_SHUFFLE_PIECES, 0],  # pylint: disable=protected-access
                         ids=["single_stage", "dask_groupby"])
def test_a_shuffle_spreads_its_output_over_the_requested_partitions(scheduler_address, monkeypatch, max_pieces):
    # Two inputs of one partition each: dask.distributed's groupby alone would keep 2; the
    # runner asks for four per worker. Both of the runner's shuffles (the graph is built here).
    monkeypatch.setattr(shuffle, "_MAX_SHUFFLE_PIECES", max_pieces)
    options = _on_cluster(scheduler_address)
    with beam.Pipeline(options=options) as pipeline:
        evens = pipeline | "Evens" >> beam.Create([(k, k) for k in range(0, 200, 2)], reshuffle=False)
        odds = pipeline | "Odds" >> beam.Create([(k, k) for k in range(1, 200, 2)], reshuffle=False)
        counts = ((evens, odds) | beam.Flatten() | beam.GroupByKey()
                  | beam.ParDo(_CountBundles()) | beam.CombineGlobally(lambda pairs: tuple(map(sum, zip(*pairs)))))
        assert_that(counts, equal_to([(8, 200)]))


def _windowed(value):
    return beam.utils.windowed_value.WindowedValue(value, 0, [beam.transforms.window.GlobalWindow()])


def test_partitions_go_to_another_worker_in_one_piece():
    # What a worker sends for a task's result (Worker.get_data): a plain list goes element by
    # element, each with its own header and frames; the runner's partitions go as one pickle.
    items = [(f"key{i}", _windowed(("source", "image", f"/data/{i}.jpg"))) for i in range(1000)]
    plain = dumps({"data": {"key": to_serialize(items)}})
    whole = dumps({"data": {"key": to_serialize(shuffle.Elements(items))}})
    assert len(plain) > 1000
    assert len(whole) < 10
    received = loads(whole)["data"]["key"]
    assert type(received) is shuffle.Elements  # pylint: disable=unidiomatic-typecheck
    assert [(key, value.value) for key, value in received] == [(key, value.value) for key, value in items]


def test_the_shuffle_puts_each_key_in_one_partition_with_its_values_in_order():
    inputs = [[(f"k{(7 * i + p) % 13}", _windowed((p, i))) for i in range(40)] for p in range(3)]
    bag = dask.bag.from_delayed([dask.delayed(shuffle.Elements)(part) for part in inputs])
    shuffled = shuffle.shuffle(bag, 4).to_delayed(optimize_graph=False)
    partitions = dask.compute(*shuffled, scheduler="sync")
    assert len(partitions) == 4
    assert all(type(part) is shuffle.Elements for part in partitions)  # pylint: disable=unidiomatic-typecheck
    grouped = [pair for part in partitions for pair in part]
    expected = collections.defaultdict(list)
    for part in inputs:  # input partitions in order, elements in order within each
        for key, value in part:
            expected[key].append(value.value)
    assert sorted(key for key, _ in grouped) == sorted(expected)  # every key once
    assert {key: values for key, values in grouped} == dict(expected)
    assert len({shuffle._bucket(key, 4) for key in expected}) == 4  # pylint: disable=protected-access


def test_a_key_goes_to_the_same_partition_in_every_process():
    # Worker processes split their partitions independently: Python's hash of a str differs
    # between processes (PYTHONHASHSEED), the runner's bucket must not.
    keys = ["cat_1", "dog_2", ("a", 1), 7, None, b"bytes"]
    here = [shuffle._bucket(key, 8) for key in keys]  # pylint: disable=protected-access
    code = ("from beam_dask import shuffle; "
            f"print([shuffle._bucket(key, 8) for key in {keys!r}])")
    there = [subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                            env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip() for seed in (1, 2)]
    assert there == [str(here)] * 2


class _SumAndParts(beam.CombineFn):
    """A sum that also counts the accumulators merged into it and how many of them were
    compacted: Beam compacts an accumulator only before shuffling it, so lifted, each
    bundle's accumulator is compacted; unlifted, the combine runs on the grouped elements
    (Beam splits them into three accumulators, none compacted, to exercise merging)."""

    def create_accumulator(self):
        return 0, 1, 0  # sum, accumulators, compacted ones

    def add_input(self, accumulator, element):
        return accumulator[0] + element, *accumulator[1:]

    def compact(self, accumulator):
        return accumulator[0], accumulator[1], 1

    def merge_accumulators(self, accumulators):
        return tuple(map(sum, zip(*accumulators)))

    def extract_output(self, accumulator):
        return accumulator[0], accumulator[1] > 1 and accumulator[1] == accumulator[2]


def test_combines_run_per_bundle_before_the_shuffle(scheduler_address):
    # Upstream's runner shuffled every element of a CombinePerKey (the job's counts shuffled
    # every record); lifted, only each bundle's (compacted) accumulator crosses.
    options = _on_cluster(scheduler_address)
    with beam.Pipeline(options=options) as pipeline:
        numbers = (pipeline | beam.Create([(k % 10, k) for k in range(400)]) | beam.GroupByKey()
                   | beam.FlatMap(lambda kv: kv[1]))  # spread over the runner's 8 partitions
        total = numbers | "Total" >> beam.CombineGlobally(_SumAndParts())
        per_key = (numbers | "ByParity" >> beam.Map(lambda x: (x % 2, x))
                   | "PerKey" >> beam.CombinePerKey(_SumAndParts()))
        assert_that(total, equal_to([(sum(range(400)), True)]), label="TotalLifted")
        assert_that(per_key, equal_to([(0, (sum(range(0, 400, 2)), True)),
                                       (1, (sum(range(1, 400, 2)), True))]), label="PerKeyLifted")


class _MarkEach(beam.DoFn):
    """Leaves a file per element it processes, so a test can count how often each ran."""

    def __init__(self, directory: str):
        self._directory = directory

    def process(self, number):
        open(os.path.join(self._directory, f"{number}-{uuid.uuid4().hex}"), "w").close()  # pylint: disable=consider-using-with
        yield number


def test_a_step_that_feeds_several_branches_runs_once_per_element(scheduler_address, tmp_path):
    options = _on_cluster(scheduler_address)
    with beam.Pipeline(options=options) as pipeline:
        numbers = pipeline | beam.Create(list(range(20))) | "Mark" >> beam.ParDo(_MarkEach(str(tmp_path)))
        assert_that(numbers | "Double" >> beam.Map(lambda x: 2 * x), equal_to([2 * x for x in range(20)]),
                    label="Doubled")
        assert_that(numbers | "Sum" >> beam.CombineGlobally(sum), equal_to([190]), label="Summed")
        _ = numbers | "DropAll" >> beam.Filter(lambda x: False)  # a third leaf
    runs = collections.Counter(name.split("-")[0] for name in os.listdir(tmp_path))
    assert runs == {str(x): 1 for x in range(20)}


def test_a_side_input_is_computed_once_however_many_tasks_read_it(scheduler_address, tmp_path):
    # Upstream hands every task that reads a side input the side input's graph: the steps before
    # it ran once per reading task (here one per partition of the 8).
    options = _on_cluster(scheduler_address, "--dask_npartitions", "8")
    with beam.Pipeline(options=options) as pipeline:
        total = (pipeline | "Side" >> beam.Create([1, 2, 3])
                 | "MarkSide" >> beam.ParDo(_MarkEach(str(tmp_path)))
                 | "Total" >> beam.CombineGlobally(sum))
        spread = (pipeline | "Main" >> beam.Create([(k % 8, k) for k in range(64)])
                  | "Spread" >> beam.GroupByKey())  # 8 keys
        scaled = spread | "Scale" >> beam.Map(lambda kv, t: (kv[0], sum(kv[1]) * t),
                                              t=beam.pvalue.AsSingleton(total))
        assert_that(scaled, equal_to([(k, 6 * sum(range(k, 64, 8))) for k in range(8)]))
    runs = collections.Counter(name.split("-")[0] for name in os.listdir(tmp_path))
    assert runs == {"1": 1, "2": 1, "3": 1}


class _RecordPriorities(SchedulerPlugin):
    """Keeps the scheduler's priority of every task it starts, by task name."""

    name = "record-priorities"

    def __init__(self):
        self.priorities = collections.defaultdict(set)

    async def start(self, scheduler):
        self.scheduler = scheduler  # pylint: disable=attribute-defined-outside-init

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            name = key[0] if isinstance(key, tuple) else key
            self.priorities[str(name).rsplit("-", 1)[0]].add(self.scheduler.tasks[key].priority[0])


def _recorded_priorities(dask_scheduler):
    return {name: sorted(values) for name, values in dask_scheduler.plugins["record-priorities"].priorities.items()}


def test_steps_run_fused_and_later_stages_reach_the_scheduler_with_a_higher_dask_priority(scheduler_address):
    # ParDos that read one another's output run in one task per partition (Make, Read, Key,
    # Shift); after a shuffle, or at a side input computed from the stage, a new stage starts. The job's decoded examples are read by two branches;
    # Dask's own order ran the cheap one after every partition had been decoded, so all the
    # examples stayed in memory until the end. The runner gives later steps a higher priority
    # (dask's priority: lower first), and must keep them through to the scheduler.
    with Client(scheduler_address) as client:
        client.register_plugin(_RecordPriorities())
        options = _on_cluster(scheduler_address)
        with beam.Pipeline(options=options) as pipeline:
            made = pipeline | beam.Create(list(range(100))) | "Make" >> beam.Map(lambda x: x + 1)
            read = made | "Read" >> beam.Filter(lambda x: x % 7 == 0) | "Key" >> beam.Map(lambda x: (x % 2, x))
            grouped = read | beam.GroupByKey() | "AfterShuffle" >> beam.MapTuple(lambda key, xs: (key, sorted(xs)))
            assert_that(grouped, equal_to([(0, list(range(14, 99, 14))), (1, list(range(7, 99, 14)))]))
            total = made | "Sum" >> beam.CombineGlobally(sum)
            assert_that(total, equal_to([5050]), label="Total")
            # A side input from elsewhere joins the stage; one computed from it starts a new one.
            offset = pipeline | "Offset" >> beam.Create([1000])
            shifted = made | "Shift" >> beam.Map(lambda x, o: x + o, o=beam.pvalue.AsSingleton(offset))
            scaled = shifted | "Scale" >> beam.Map(lambda x, t: x * t, t=beam.pvalue.AsSingleton(total))
            assert_that(scaled, equal_to([(x + 1001) * 5050 for x in range(100)]), label="Scaled")
        priorities = client.run_on_scheduler(_recorded_priorities)
        client.unregister_scheduler_plugin("record-priorities")
    # A stage's tasks are named after its first step and how many more it runs ("Make+7"); the
    # tasks that hand its outputs on, after the step and the output ("Shift.main").
    firsts = {name.split("+")[0] for name in priorities if "." not in name}
    assert "Scale" in firsts and not firsts & {"Read", "Key", "Shift"}, sorted(priorities.items())
    stages = {first: [values for name, values in priorities.items() if name.split("+")[0] == first]
              for first in ("Make", "AfterShuffle")}
    assert all(len(found) == 1 and len(found[0]) == 1 for found in stages.values()), sorted(priorities.items())
    assert stages["AfterShuffle"][0][0] < stages["Make"][0][0], sorted(priorities.items())


class _Big:
    """A large intermediate element; counts how many are alive in this process."""

    alive = 0

    def __init__(self):
        type(self).alive += 1
        self.payload = bytearray(1 << 16)

    def __del__(self):
        type(self).alive -= 1


def test_a_stage_passes_each_element_on_before_it_makes_the_next(scheduler_address):
    # Without fusion each step's output is a whole partition (here 128 elements) in memory
    # before the next step starts; fused, an element is read by the next step as it is made.
    # (At most 2: one whose last reference goes only with the cyclic garbage collector, at a
    # moment a loaded machine decides, can outlive the next one's making.)
    options = _on_cluster(scheduler_address)
    with beam.Pipeline(options=options) as pipeline:
        alive = (pipeline | beam.Create(list(range(256)))
                 | "MakeBig" >> beam.Map(lambda x: _Big())
                 | "CountAlive" >> beam.Map(lambda big: type(big).alive)
                 | beam.CombineGlobally(max))
        assert_that(alive | beam.Map(lambda most: 1 <= most <= 2), equal_to([True]))


# Run in a fresh interpreter, so the heap is this code's alone: large blocks from the heap
# (glibc raises its mmap threshold after a large free), each followed by a small block that
# stays; freeing the large ones leaves holes, not a free top.
_FRAGMENT_AND_RELEASE = """
import json, threading, psutil
from beam_dask.memory import release_free_memory
result = {}
def work():
    first = bytearray(1 << 20)
    del first
    large, small = [], []
    for _ in range(200):
        large.append(bytearray(1 << 20))
        small.append(bytearray(64))
    del large
    result["before"] = psutil.Process().memory_info().rss
    result["released"] = release_free_memory()
    result["after"] = psutil.Process().memory_info().rss
worker = threading.Thread(target=work)  # a thread's own arena, as in a Dask worker
worker.start()
worker.join()
print(json.dumps(result))
"""


def test_release_free_memory_hands_freed_heap_pages_back_to_the_os():
    # glibc's own defaults: dask.distributed sets MALLOC_TRIM_THRESHOLD_ in the environment of
    # the process that starts a LocalCluster (this one, for the module's cluster), and a low
    # threshold would trim at every free, before the test's own call.
    env = {name: value for name, value in os.environ.items() if name != "MALLOC_TRIM_THRESHOLD_"}
    output = subprocess.run([sys.executable, "-c", _FRAGMENT_AND_RELEASE], check=True,
                            capture_output=True, text=True, env=env).stdout
    result = json.loads(output.strip().splitlines()[-1])
    assert result["released"] is True  # glibc, as on every Linux image the job runs on here
    assert result["before"] - result["after"] > 100 << 20, result  # of the 200 MB freed




def _probe():
    return os.environ.get("BEAM_DASK_PROBE")


def test_local_cluster_sets_the_environment_its_workers_start_with():
    with local_cluster(1, {"BEAM_DASK_PROBE": "set before start"}) as cluster, Client(cluster) as client:
        assert list(client.run(_probe).values()) == ["set before start"]


def test_a_pipeline_pointed_at_a_service_that_is_not_dask_fails_instead_of_waiting_for_ever():
    # Fix 12: dask's client waited for ever for the handshake of a service that takes the
    # connection and never answers as Dask does.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(RuntimeError) as refused:
            with beam.Pipeline(options=_on_cluster(address, "--dask_connection_timeout", "2")) as pipeline:
                _ = pipeline | beam.Create([1, 2])
    assert str(refused.value) == (f"--dask_client_address {address!r}: no Dask scheduler answers there "
                                  "(nothing answered Dask's handshake within 2 s)")
    assert time.monotonic() - started < 20


def test_a_pipeline_pointed_at_a_dask_worker_fails_naming_it(scheduler_address):
    with Client(scheduler_address) as client:
        worker = sorted(client.scheduler_info()["workers"])[0]
    with pytest.raises(RuntimeError, match="a Dask Worker answers there, not a scheduler"):
        with beam.Pipeline(options=_on_cluster(worker)) as pipeline:
            _ = pipeline | beam.Create([1, 2])


def test_a_scheduler_is_found_from_a_running_event_loop(scheduler_address):
    # (a notebook runs one: asyncio.run would refuse to start another in its thread)
    async def from_a_loop():
        return scheduler_refusal(scheduler_address, 10)

    assert asyncio.run(from_a_loop()) is None
