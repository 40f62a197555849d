"""How the job's processes end: the command's without the interpreter's teardown (its exit
handlers still run, its output is all there), a worker's with the harness's status; the tests'
crash hook, which kills them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python(code: str, tmp_path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          env={**os.environ, "PYTHONPATH": TREE}, timeout=120, check=False, **kwargs)


def test_exit_now_runs_the_exit_handlers_flushes_and_keeps_the_status(tmp_path):
    done = _python("""
        import atexit, os, sys
        from beam_etl import native_logs, quick_exit
        native_logs.filter_native_logs()
        atexit.register(lambda: open("handler-ran", "w").write("yes"))
        sys.stdout.write("x" * 100_000)  # block-buffered: a pipe
        os.write(2, b"through the filter\\n")
        os.write(2, b"I0000 00:00:00.000000 1 cuda_platform.cc:1] dropped\\n")
        quick_exit.exit_now(3)
        """, tmp_path)
    assert done.returncode == 3
    assert done.stdout == b"x" * 100_000
    assert done.stderr == b"through the filter\n"
    assert (tmp_path / "handler-ran").read_text() == "yes"


def test_exit_now_with_none_is_success(tmp_path):
    assert _python("from beam_etl import quick_exit; quick_exit.exit_now(None)", tmp_path).returncode == 0


def test_a_worker_whose_harness_fails_exits_with_1_and_its_traceback(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "CONTROL_API_SERVICE_DESCRIPTOR"}
    done = subprocess.run([sys.executable, "-m", "beam_etl.beam.sdk_worker"], cwd=TREE, capture_output=True,
                          env={**env, "PYTHONPATH": TREE}, timeout=120, check=False)
    assert done.returncode == 1
    assert b"Traceback" in done.stderr and b"CONTROL_API_SERVICE_DESCRIPTOR" in done.stderr


def test_a_crash_point_the_hook_does_not_know_is_an_error_in_the_code_or_the_variable(monkeypatch):
    """A misspelt point would never crash, and a test of a crash there would pass unknowing."""
    import ast

    from beam_etl.beam import crash

    named = set()
    for path in (pathlib.Path(TREE) / "beam_etl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "func", None) and getattr(node.func, "attr", getattr(node.func, "id", None))
            if isinstance(node, ast.Call) and name == "crash_point":
                named.add(node.args[0].value)
    assert named == set(crash.CRASH_POINTS)  # every point in the code is known, and every known one is in it
    monkeypatch.setenv("BEAM_ETL_CRASH_AT", "before_comit")
    with pytest.raises(ValueError, match="'before_comit' is not a crash point"):
        crash.crash_point("before_commit")
    monkeypatch.setenv("BEAM_ETL_CRASH_AT", "after_lease")
    with pytest.raises(ValueError, match="'after_leas' is not a crash point"):
        crash.crash_point("after_leas")
    crash.crash_point("before_commit")  # (another point: goes on)
