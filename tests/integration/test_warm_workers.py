"""Worker processes forked from the warm parent: the protocol with a real parent process, its
fallbacks, its ends when what started it is gone, and real multi-process runs through it and
without it giving the same bytes."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from beam_etl.beam import launch, options, outcome_store, warm_workers
from beam_etl.output_layout import CACHE_DIR
from beam_etl.tools import sample_data
from tests.support.jobs import output_files

TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWO_WORKERS = ("--direct_running_mode", "multi_processing", "--direct_num_workers", "2")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_until_reaped(pid: int, seconds: float = 20.0) -> bool:
    """Whether ``pid`` is gone, its status collected by its parent (no zombie left)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


def _wait_until_gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def parent():
    run_id = warm_workers.start(verbose=True)
    assert run_id and os.environ[warm_workers.SOCKET_ENV]
    yield warm_workers._current["process"]  # pylint: disable=protected-access
    warm_workers.stop()


def test_without_a_parent_the_command_runs_the_harness_itself(monkeypatch):
    monkeypatch.delenv(warm_workers.SOCKET_ENV, raising=False)
    assert warm_workers.attach() is None


def test_a_child_of_the_parent_runs_the_harness_with_this_process_s_streams_and_status(parent):
    # No runner to connect to: Beam's harness fails at once, as it would in a cold worker.
    env = {name: value for name, value in os.environ.items() if name != "CONTROL_API_SERVICE_DESCRIPTOR"}
    done = subprocess.run([sys.executable, "-m", "beam_etl.beam.sdk_worker"], env={**env, "PYTHONPATH": TREE},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    # The child wrote to the command's stderr: its line, then the harness's traceback.
    forked = re.findall(r"worker process (\d+) forked from the warm parent (\d+)", done.stderr)
    assert len(forked) == 1 and int(forked[0][1]) == parent.pid
    assert "CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr.split("forked from the warm parent")[1]
    assert _wait_until_gone(int(forked[0][0]))  # (it ends just after sending the status the command exits with)


def test_the_run_id_is_in_the_parent_s_environment_for_a_resume_to_see(parent):
    with open(f"/proc/{parent.pid}/environ", "rb") as environ:
        assert f"BEAM_ETL_RUN_ID={warm_workers.run_id()}".encode() in environ.read().split(b"\0")


def test_once_stopped_there_is_no_parent_and_the_command_runs_cold(parent):
    path = os.environ[warm_workers.SOCKET_ENV]
    warm_workers.stop()
    assert not _alive(parent.pid) and not os.path.exists(os.path.dirname(path))
    os.environ[warm_workers.SOCKET_ENV] = path  # a command started before the stop still finds none
    try:
        assert warm_workers.attach() is None
    finally:
        del os.environ[warm_workers.SOCKET_ENV]


def test_a_child_ends_when_its_command_is_killed(parent):
    # A runner that never answers: the harness would wait for it; the command is killed instead.
    env = {**os.environ, "PYTHONPATH": TREE, "CONTROL_API_SERVICE_DESCRIPTOR": 'url: "localhost:9"'}
    command = subprocess.Popen([sys.executable, "-m", "beam_etl.beam.sdk_worker"], env=env,
                               stderr=subprocess.PIPE, text=True)
    child = int(re.search(r"worker process (\d+) forked", command.stderr.readline()).group(1))
    time.sleep(1.0)
    assert _alive(child) and command.poll() is None  # waiting for the runner, as its command is
    command.kill()
    command.wait()
    assert _wait_until_reaped(child)
    assert warm_workers.killed_workers() == []  # (it ended on its own when its command was gone)


def test_the_parent_writes_down_the_children_a_signal_killed_and_the_stop_keeps_them(parent):
    env = {**os.environ, "PYTHONPATH": TREE, "CONTROL_API_SERVICE_DESCRIPTOR": 'url: "localhost:9"'}
    commands = [subprocess.Popen([sys.executable, "-m", "beam_etl.beam.sdk_worker"], env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(3)]
    children = [int(re.search(r"worker process (\d+) forked", command.stderr.readline()).group(1))
                for command in commands]
    os.kill(children[0], signal.SIGKILL)
    os.kill(children[1], signal.SIGTERM)
    os.kill(children[2], signal.SIGUSR1)  # (the parent's own stop signal: to a worker, as to any process)
    for command in commands:
        assert command.wait(timeout=30) == 1  # (the command's status: its child died without a word)
    directory = os.path.dirname(os.environ[warm_workers.SOCKET_ENV])
    # At once, as a failed run stops it: what the parent had not yet written down, it writes as it
    # ends, a child whose connection closed but whose death the kernel had not yet reported too.
    warm_workers.stop(until_workers_end=True)
    killed = [(children[0], signal.SIGKILL), (children[1], signal.SIGTERM), (children[2], signal.SIGUSR1)]
    assert sorted(warm_workers.killed_workers()) == sorted(killed) and not os.path.exists(directory)
    assert warm_workers.start(verbose=True)  # a new run: none of its workers was killed
    assert warm_workers.killed_workers() == []


def test_a_sigterm_handled_between_a_child_s_wait_and_its_record_loses_no_record(tmp_path):
    """Python may run the parent's SIGTERM handler inside its SIGCHLD handler, right after that
    one has waited for a killed child and before it writes the child down: the parent must still
    write it down before it ends (a run failed by a killed worker names it)."""
    script = ("import os, signal, sys\n"
              "from beam_etl.beam import warm_workers\n"
              "child = os.fork()\n"
              "if child == 0:\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # (dead, not yet reaped)\n"
              "wait = os.waitpid\n"
              "def waitpid(*args):\n"
              "    reaped = wait(*args)\n"
              "    if reaped[0]:\n"
              "        warm_workers._reap_and_end(sys.argv[1])  # the launcher's SIGTERM, handled here\n"
              "    return reaped\n"
              "os.waitpid = waitpid\n"
              "warm_workers._reap(sys.argv[1])\n"
              "print(child, 'the parent went on')\n")
    deaths = tmp_path / "deaths"
    done = subprocess.run([sys.executable, "-c", script, str(deaths)], cwd=TREE, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0 and "went on" not in done.stdout, (done.stdout, done.stderr[-2000:])
    assert warm_workers._read_deaths(str(deaths)) and warm_workers._read_deaths(str(deaths))[0][1] == signal.SIGKILL


def test_the_parent_ends_when_its_launcher_is_gone_and_leaves_no_socket_behind(tmp_path):
    script = ("import sys, time\nfrom beam_etl.beam import warm_workers\nwarm_workers.start()\n"
              "print(warm_workers._current['process'].pid, warm_workers._current['directory'], flush=True)\n"
              "time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": TREE})
    warm, directory = launcher.stdout.readline().split()
    assert _alive(int(warm)) and os.listdir(directory) == ["socket"]
    launcher.send_signal(signal.SIGKILL)  # (it cannot remove the folder it made for the socket)
    launcher.wait()
    assert _wait_until_gone(int(warm))
    assert not os.path.exists(directory)  # the parent removed it as it ended


def test_a_worker_and_its_command_end_soon_after_their_launcher_is_killed_alone():
    """Killed alone (not its process group), the launcher leaves worker commands whose harness
    waits for a runner that is gone: the forked worker ends within a second or so, and its
    command with it, where they waited a minute or two for the connection to time out (and the
    output's next run was refused meanwhile for processes of this one)."""
    script = ("import os, re, subprocess, sys, time\nfrom beam_etl.beam import warm_workers\n"
              "warm_workers.start(verbose=True)\n"
              "env = {**os.environ, 'CONTROL_API_SERVICE_DESCRIPTOR': 'url: \"localhost:9\"'}\n"
              "command = subprocess.Popen([sys.executable, '-m', 'beam_etl.beam.sdk_worker'], env=env, "
              "stderr=subprocess.PIPE, text=True)\n"
              "child = re.search(r'worker process (\\d+) forked', command.stderr.readline()).group(1)\n"
              "print(command.pid, child, flush=True)\n"
              "time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": TREE})
    command, child = map(int, launcher.stdout.readline().split())
    time.sleep(1.0)
    assert _alive(command) and _alive(child)  # waiting for the runner
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    assert _wait_until_gone(child, seconds=10.0) and _wait_until_gone(command, seconds=10.0)


def _killed_launch(temp_dir) -> str:
    """Starts a process that starts a warm parent with ``temp_dir`` as its temporary folder, kills
    the process group of both with SIGKILL (neither can clean up), and returns the folder of the
    parent's socket, left behind."""
    launcher, directory = _launcher(temp_dir)
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    assert _wait_until_gone(int(launcher.warm_pid))
    assert os.listdir(directory) == ["socket"]
    return directory


def _launcher(temp_dir) -> tuple[subprocess.Popen, str]:
    script = ("import time\nfrom beam_etl.beam import warm_workers\nwarm_workers.start()\n"
              "print(warm_workers._current['process'].pid, warm_workers._current['directory'], flush=True)\n"
              "time.sleep(600)\n")
    launcher = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": TREE, "TMPDIR": str(temp_dir)},
                                start_new_session=True)
    launcher.warm_pid, directory = launcher.stdout.readline().split()
    return launcher, directory


def _age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


@pytest.fixture
def short_tmp():
    """A folder with a short path: a socket's path may not be longer than 107 bytes, and pytest's
    own folders, under a long user or workspace name, can take most of that."""
    folder = tempfile.mkdtemp(prefix="bew-", dir="/tmp")
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_launch_removes_the_socket_folder_of_a_run_killed_with_its_whole_process_group(short_tmp):
    killed = _killed_launch(short_tmp)
    _age(os.path.join(killed, "socket"), 60)
    live, live_directory = _launcher(short_tmp)
    try:
        assert not os.path.exists(killed)  # the next launch removed it
        _age(os.path.join(live_directory, "socket"), 60)
        just_killed = _killed_launch(short_tmp)
        # The live run's socket is left alone, and so is a dead one too young to tell from one
        # about to listen.
        assert warm_workers.remove_abandoned(str(short_tmp)) == []
        assert os.listdir(live_directory) == ["socket"] and _alive(int(live.warm_pid))
        _age(os.path.join(just_killed, "socket"), 60)
        assert warm_workers.remove_abandoned(str(short_tmp)) == [just_killed]
        assert os.listdir(live_directory) == ["socket"]
    finally:
        os.killpg(live.pid, signal.SIGKILL)
        live.wait()


def test_only_a_dead_socket_of_the_job_s_own_making_is_removed(short_tmp, monkeypatch):
    def dead_socket(folder: str, age: float = 60, extra: str | None = None) -> str:
        directory = short_tmp / folder
        directory.mkdir()
        bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound.bind(str(directory / "socket"))
        bound.close()  # the file stays; nothing listens on it
        _age(directory / "socket", age)
        if extra:
            (directory / extra).write_text("data")
        return str(directory)

    abandoned = dead_socket("beam-etl-workers-abandoned")
    with_deaths = dead_socket("beam-etl-workers-with-deaths", extra="deaths")  # (its parent's record)
    kept = [dead_socket("beam-etl-workers-just-bound", age=1),  # may be about to listen()
            dead_socket("beam-etl-workers-with-more", extra="notes.txt"),  # holds something else
            dead_socket("another-tool-workers")]  # not the job's name
    (short_tmp / "beam-etl-workers-plain-file").mkdir()
    (short_tmp / "beam-etl-workers-plain-file" / "socket").write_text("not a socket")
    _age(short_tmp / "beam-etl-workers-plain-file" / "socket", 60)
    kept.append(str(short_tmp / "beam-etl-workers-plain-file"))
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    (short_tmp / "beam-etl-workers-live").mkdir()
    listening.bind(str(short_tmp / "beam-etl-workers-live" / "socket"))
    listening.listen(1)
    _age(short_tmp / "beam-etl-workers-live" / "socket", 60)
    kept.append(str(short_tmp / "beam-etl-workers-live"))
    elsewhere = dead_socket("elsewhere")  # a link of the job's name to a folder that is not the job's
    os.symlink(elsewhere, short_tmp / "beam-etl-workers-link")
    kept.append(elsewhere)
    try:
        with monkeypatch.context() as another_user:  # whose folders are not this user's to remove
            another_user.setattr(warm_workers.os, "getuid", lambda uid=os.getuid(): uid + 1)
            assert warm_workers.remove_abandoned(str(short_tmp)) == []
        assert sorted(warm_workers.remove_abandoned(str(short_tmp))) == [abandoned, with_deaths]
    finally:
        listening.close()
    assert not os.path.exists(abandoned) and not os.path.exists(with_deaths)
    assert all(os.path.exists(os.path.join(directory, "socket")) for directory in kept)
    assert warm_workers.remove_abandoned(str(short_tmp / "missing")) == []


def test_a_run_on_workers_forked_from_the_parent_writes_what_cold_workers_write(pets_dir, tmp_path):
    flags = ["--oxford_pets", str(pets_dir), "--image_size", "40x32", "--num_shards", "2", *TWO_WORKERS]
    done = subprocess.run([sys.executable, "-m", "pipelines.preprocess", *flags, "--output", str(tmp_path / "warm"),
                           "--verbose"], env={**os.environ, "PYTHONPATH": TREE}, cwd=TREE,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(re.findall(r"worker process \d+ forked from the warm parent", done.stderr)) == 2
    # launch() alone starts no parent: its workers start cold.
    assert warm_workers.SOCKET_ENV not in os.environ
    config, pipeline_options = options.parse_args([*flags, "--output", str(tmp_path / "cold")])
    launch.launch(config, pipeline_options)
    assert output_files(tmp_path / "warm") == output_files(tmp_path / "cold")


def test_a_run_in_this_process_stops_the_parent_it_did_not_need(pets_dir, tmp_path, monkeypatch):
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel

    started, running = [], []
    monkeypatch.setattr(warm_workers, "start", lambda real=warm_workers.start, **kw: started.append(real(**kw)))
    # Right after the launcher has chosen how to run (few inputs: in this process).
    monkeypatch.setattr(launch, "quiet_worker_start",
                        lambda real=launch.quiet_worker_start: running.append(warm_workers.run_id()) or real())
    preprocess.run(["--oxford_pets", str(pets_dir), "--image_size", "40x32", "--output", str(tmp_path / "o")])
    assert started and started[0] and running == [None]


@pytest.mark.parametrize("argv, starts", [
    (["--oxford_pets", "d", "--output", "o"], True),
    (["--oxford_pets", "d", "--output", "o", "--runner", "DirectRunner"], False),
    (["--oxford_pets", "d", "--output", "o", "--runner=DataflowRunner"], False),
    (["--oxford_pets", "d", "--output", "o", "--dask_local_workers", "2"], False),
    (["--help"], False),
])
def test_only_a_run_that_may_start_local_workers_starts_a_parent(argv, starts):
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel

    assert preprocess.may_start_local_workers(argv) == starts


def _children(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat", encoding="ascii") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
        except (ValueError, OSError):
            continue
    return found


def _is_warm_parent(pid: int) -> bool:
    try:
        return b"beam_etl.beam.warm_workers" in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_worker_killed_mid_run_is_named_in_the_failure_and_the_rerun_goes_on(tmp_path, short_tmp):
    """As the kernel's out-of-memory killer would: a SIGKILL to a worker forked from the warm
    parent. The run fails saying so, in one message, and leaves no output; the same command
    again finishes the run. (Its temporary folder is the test's: the workers the failed run's end
    cuts short leave TensorFlow's autograph files there.)"""
    env = dict(os.environ, TMPDIR=str(short_tmp))
    data, out = tmp_path / "data", tmp_path / "out"
    sample_data.generate(str(data), num_images=450, seed=5)  # (400 inputs or more: 2 worker processes)
    command = [sys.executable, "-m", "pipelines.preprocess", "--images", str(data / "images" / "*.jpg"),
               "--masks", str(data / "annotations" / "trimaps" / "*.png"), "--output", str(out), "--image_size", "48"]
    job = subprocess.Popen(command, cwd=TREE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while job.poll() is None and time.monotonic() < deadline:
        workers = [child for parent in _children(job.pid) if _is_warm_parent(parent) for child in _children(parent)]
        segments = list((out / CACHE_DIR / outcome_store.SEGMENTS).glob("*.seg")) if out.exists() else []
        if len(workers) == 2 and sum(segment.stat().st_size for segment in segments) > 0:
            break
        time.sleep(0.02)
    assert job.poll() is None and len(workers) == 2, (workers, job.poll())
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    for log in re.findall(r"the traceback is in (\S+);", stderr):
        os.unlink(log)
    assert job.returncode == 1, stderr
    assert f"beam-etl: failed: worker process {workers[0]} died of SIGKILL" in stderr, stderr
    assert "Traceback" not in stderr and "Exception in thread" not in stderr and "ERROR" not in stderr, stderr
    assert sorted(os.listdir(out)) == [CACHE_DIR]
    again = subprocess.run(command, cwd=TREE, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "450 inputs -> 450 written" in again.stdout
