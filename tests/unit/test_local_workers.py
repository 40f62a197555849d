"""How a run left to the DirectRunner's defaults uses this machine: a worker process per core
for many inputs, this process for few; what the user names is left alone."""

import logging

import pytest
from apache_beam.options.pipeline_options import DirectOptions

from beam_etl import native_logs
from beam_etl.beam import launch, options


def _touch_pairs(root, count):
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(count):
        (root / "images" / f"{i}.jpg").write_bytes(b"x")
        (root / "masks" / f"{i}.png").write_bytes(b"x")
    return ["--images", str(root / "images" / "*.jpg"), "--masks", str(root / "masks" / "*.png"),
            "--output", str(root / "out")]


def _direct(pipeline_options):
    direct = pipeline_options.view_as(DirectOptions)
    return direct.direct_running_mode, direct.direct_num_workers


@pytest.mark.parametrize("inputs, cores, expected, said", [
    (3, 2, ("in_memory", 1), "in this process (under 4 inputs)"),
    (4, 2, ("multi_processing", 2), "on 2 worker processes, one per core"),
    (9, 3, ("multi_processing", 3), "on 3 worker processes, one per core"),
    (9, 1, ("in_memory", 1), "in this process (one core)"),
])
def test_the_job_chooses_by_the_number_of_inputs(tmp_path, monkeypatch, inputs, cores, expected, said):
    monkeypatch.setattr(launch, "MANY_INPUTS", 4)
    monkeypatch.setattr(launch.os, "cpu_count", lambda: cores)
    config, pipeline_options = options.parse_args(_touch_pairs(tmp_path, inputs))
    assert options.job_chooses_workers(pipeline_options)
    assert launch.local_workers(config, pipeline_options) == said
    assert _direct(pipeline_options) == expected


@pytest.mark.parametrize("named", [
    ["--direct_num_workers", "1"], ["--direct_running_mode=in_memory"],
    ["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"],
    ["--direct_running_mode", "multi_threading", "--direct_num_workers", "2"],
    ["--runner", "BundleBasedDirectRunner"],
])
def test_what_the_user_names_is_left_alone(tmp_path, monkeypatch, named):
    monkeypatch.setattr(launch, "MANY_INPUTS", 1)
    config, pipeline_options = options.parse_args([*_touch_pairs(tmp_path, 3), *named])
    before = _direct(pipeline_options)
    assert not options.job_chooses_workers(pipeline_options)
    assert launch.local_workers(config, pipeline_options) is None
    assert _direct(pipeline_options) == before


@pytest.mark.parametrize("named, expected", [
    (["--direct_num_workers=2"], ("multi_processing", 2)),
    (["--direct_num_workers", "0"], ("multi_processing", 3)),  # one per core
    (["--direct_running_mode", "multi_processing", "--direct_num_workers", "0"], ("multi_processing", 3)),
    (["--direct_num_workers", "1"], ("in_memory", 1)),
])
def test_a_number_of_workers_alone_runs_that_many_worker_processes(tmp_path, monkeypatch, named, expected):
    """Beam's default mode, in_memory, runs one worker whatever --direct_num_workers says (it
    only warns): a number given alone is run as worker processes, and 0 is one per core."""
    monkeypatch.setattr(launch, "MANY_INPUTS", 1000)  # (the job would choose this process)
    monkeypatch.setattr(options.os, "cpu_count", lambda: 3)
    config, pipeline_options = options.parse_args([*_touch_pairs(tmp_path, 3), *named])
    assert _direct(pipeline_options) == expected
    assert not options.job_chooses_workers(pipeline_options)
    assert launch.local_workers(config, pipeline_options) is None
    assert _direct(pipeline_options) == expected


@pytest.mark.parametrize("workers", ["2", "0"])
def test_many_workers_in_the_in_memory_mode_are_refused(tmp_path, capsys, workers):
    with pytest.raises(SystemExit) as exited:
        options.parse_args([*_touch_pairs(tmp_path, 3), "--direct_running_mode", "in_memory",
                            "--direct_num_workers", workers])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"--direct_num_workers {workers} with --direct_running_mode in_memory" in error
    assert "runs one worker" in error


def test_counting_stops_at_the_limit(tmp_path):
    from beam_etl.beam import sources  # pylint: disable=import-outside-toplevel

    config, _ = options.parse_args(_touch_pairs(tmp_path, 7))
    assert sources.count_inputs(config, 100) == 7
    assert sources.count_inputs(config, 3) == 3


def test_the_workers_start_up_notes_are_not_shown(caplog):
    launch.quiet_worker_start()
    launch.quiet_worker_start()  # once is enough, twice is harmless
    logger = logging.getLogger("apache_beam.runners.portability.local_job_service")
    assert sum(isinstance(f, native_logs.DropNotes) for f in logger.filters) == 1
    with caplog.at_level("WARNING", logger=logger.name):
        logger.warning("Worker: severity: WARN message: \"Discarding unparseable args: ['--output', 'o']\"")
        logger.warning("Worker: severity: WARN message: \"No semi_persistent_directory found: ...\"")
        logger.warning("Worker: severity: ERROR message: \"Traceback: the DoFn failed\"")
    assert [r.getMessage() for r in caplog.records] == [
        "Worker: severity: ERROR message: \"Traceback: the DoFn failed\""]


def test_sources_that_cannot_count_run_in_this_process(monkeypatch, tmp_path):
    from beam_etl.beam import sources  # pylint: disable=import-outside-toplevel

    monkeypatch.setattr(launch.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sources, "count_inputs", lambda config, limit: None)
    config, pipeline_options = options.parse_args(_touch_pairs(tmp_path, 3))
    assert launch.local_workers(config, pipeline_options) == \
        "in this process (the sources do not say how many inputs they hold)"
    assert _direct(pipeline_options) == ("in_memory", 1)


def test_with_no_runner_named_the_job_runs_on_the_fn_api_runner_not_a_downloaded_prism(tmp_path):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner  # pylint: disable=import-outside-toplevel

    _, unnamed = options.parse_args(_touch_pairs(tmp_path, 1))
    assert isinstance(launch.local_runner(unnamed), FnApiRunner)
    (tmp_path / "x").mkdir()
    _, named = options.parse_args([*_touch_pairs(tmp_path / "x", 1), "--runner", "DirectRunner"])
    assert launch.local_runner(named) is None


@pytest.mark.parametrize("chosen", [False, True])
def test_worker_processes_run_the_harness_that_skips_the_interpreters_teardown(tmp_path, chosen):
    """Whether the job or the user chose multi_processing, the runner starts sdk_worker's
    command with as many workers, and Beam is not left to put its own command back."""
    from apache_beam.transforms.environments import SubprocessSDKEnvironment  # pylint: disable=import-outside-toplevel

    from beam_etl.beam import sdk_worker  # pylint: disable=import-outside-toplevel

    named = [] if chosen else ["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"]
    config, pipeline_options = options.parse_args([*_touch_pairs(tmp_path, 3), *named])
    if chosen:
        pipeline_options.view_as(DirectOptions).direct_running_mode = "multi_processing"
        pipeline_options.view_as(DirectOptions).direct_num_workers = 3
    runner = launch.local_runner(pipeline_options)
    environment = runner._default_environment  # pylint: disable=protected-access
    assert isinstance(environment, SubprocessSDKEnvironment)
    assert environment.command_string == sdk_worker.command()
    assert sdk_worker.command().endswith(" -m beam_etl.beam.sdk_worker")
    assert _direct(pipeline_options) == ("in_memory", 3)  # the mode that keeps the given environment


def test_the_runners_warning_about_that_mode_is_not_shown(caplog):
    launch.quiet_worker_count()
    logger = logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner")
    with caplog.at_level("WARNING", logger=logger.name):
        logger.warning("If direct_num_workers is not equal to 1, direct_running_mode should be ...")
        logger.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
