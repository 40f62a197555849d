"""What a command prints: TensorFlow's native chatter and Beam workers' tracebacks filtered out,
a failure told in one message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from beam_etl import failure_report
from beam_etl.native_logs import LineFilter, is_native_log

TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NATIVE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796321439.893649   16541 port.cc:153] oneDNN custom operations are on.",
    b"E0000 00:00:1796321443.794344   16541 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)",
    b"I1203 17:35:21.123456    7 tf_record_dataset_op.cc:396] The default buffer size is 262144",
    b"W1203 17:35:21.123456 1234 local_rendezvous.cc:404] Local rendezvous is aborting with status: CANCELLED",
    b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow",
]
WORKER_TRACEBACK = [
    b"Traceback (most recent call last):",
    b'  File "apache_beam/runners/common.py", line 1512, in apache_beam.runners.common.DoFnRunner.process',
    b"RuntimeError: 4 of 39 inputs rejected",
    b"",
    b"During handling of the above exception, another exception occurred:",
    b"",
    b"Traceback (most recent call last):",
    b'  File "/v/lib/python3.11/site-packages/apache_beam/runners/worker/sdk_worker.py", line 310, in _execute',
    b"    response = task()",
    b"RuntimeError: 4 of 39 inputs rejected [while running 'Preprocess/WriteManifest/WriteManifestFile']",
    b"",
]
OURS = [b"Traceback (most recent call last):", b'  File "x.py", line 1, in <module>', b"ValueError: ours", b""]


def _filtered(lines):
    line_filter = LineFilter()
    return [kept for line in lines for kept in line_filter.feed(line)] + line_filter.flush()


@pytest.mark.parametrize("line", NATIVE)
def test_native_log_lines_are_recognised(line):
    assert is_native_log(line)


@pytest.mark.parametrize("line", [b"beam-etl: 39 inputs found", b"I said: 0000 00:00", b"error: --output x",
                                  b"  File \"a.cc:3] \"", b""])
def test_other_lines_are_not(line):
    assert not is_native_log(line)


def test_the_filter_passes_everything_but_native_lines_and_worker_tracebacks():
    lines = [b"beam-etl: 7,390 inputs found", *NATIVE[:3], *WORKER_TRACEBACK, b"beam-etl: failed: x",
             *OURS, b"after"]
    assert _filtered(lines) == [b"beam-etl: 7,390 inputs found", b"beam-etl: failed: x", *OURS, b"after"]
    assert _filtered(OURS[:3]) == OURS[:3]  # a traceback at the very end still comes out
    # Two tracebacks in a row, not chained: the worker's goes, ours stays.
    assert _filtered([*WORKER_TRACEBACK[6:], *OURS]) == OURS


def test_a_traceback_is_passed_on_as_soon_as_the_next_line_shows_it_has_ended():
    line_filter = LineFilter()
    assert [line_filter.feed(line) for line in OURS[:3]] == [[], [], []]  # held: a chained one may follow
    assert line_filter.feed(b"next") == [*OURS[:3], b"next"]  # (no blank line needed)
    assert [line_filter.feed(line) for line in OURS] == [[], [], [], []]
    assert line_filter.flush() == OURS  # what a quiet moment does


def test_errors_and_fatal_native_lines_pass_but_cuda_probing_does_not():
    assert not is_native_log(b"F1203 17:35:21.123456    7 tensor.cc:12] Check failed: dims == 3")
    assert not is_native_log(b"E1203 17:35:21.123456    7 gcs_file_system.cc:40] auth failed")
    assert is_native_log(NATIVE[2])


def test_one_line_digs_out_the_root_message():
    in_process = RuntimeError("4 of 39 inputs rejected (10.3%) is above --max_reject_fraction=0.01. "
                              "[while running 'Preprocess/WriteManifest/WriteManifestFile']")
    assert failure_report.one_line(in_process) == \
        "4 of 39 inputs rejected (10.3%) is above --max_reject_fraction=0.01."
    from_worker = RuntimeError("Pipeline job failed:\n" + b"\n".join(WORKER_TRACEBACK).decode())
    assert failure_report.one_line(from_worker) == "4 of 39 inputs rejected"
    assert failure_report.one_line(KeyError()) == "KeyError"


def test_the_traceback_goes_to_a_file():
    try:
        raise ValueError("deep down")
    except ValueError as error:
        path = failure_report.write_traceback(error, "test")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    finally:
        os.remove(path)
    assert text.startswith("Traceback (most recent call last):") and text.endswith("ValueError: deep down\n")


def test_the_threads_that_failed_meanwhile_are_held_then_written_after_the_traceback(capsys):
    def fail():
        raise ConnectionError("channel closed")

    held = failure_report.HeldThreadFailures()
    before = threading.excepthook
    with held:
        thread = threading.Thread(target=fail, name="beam_control_read")
        thread.start()
        thread.join()
        exiting = threading.Thread(target=sys.exit)  # (as Python itself, it says nothing of an exit)
        exiting.start()
        exiting.join()
    assert threading.excepthook is before and capsys.readouterr().err == ""
    assert len(held) == 1 and held[0].startswith("Exception in thread beam_control_read:\nTraceback")
    assert held[0].endswith("ConnectionError: channel closed\n")
    try:
        raise ValueError("deep down")
    except ValueError as error:
        path = failure_report.write_traceback(error, "test", held)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    finally:
        os.remove(path)
    assert text.index("ValueError: deep down") < text.index("Exception in thread beam_control_read")
    held.print(sys.stderr)  # (a command that did not fail prints them, as Python would have)
    assert capsys.readouterr().err == held[0]


def test_a_failure_names_the_workers_its_own_run_lost_and_no_earlier_run_s():
    code = textwrap.dedent("""
        import signal
        from beam_etl.beam import warm_workers
        from pipelines import preprocess
        warm_workers._killed[:] = [(4242, signal.SIGKILL)]  # an earlier run's, in this process
        def failing(argv, prog):
            raise ValueError("no inputs match")
        def losing(argv, prog):  # (as the run's stop() of its warm parent keeps the record)
            warm_workers._killed[:] = [(77, signal.SIGKILL)]
            raise RuntimeError("Channel closed prematurely.")
        for run in (failing, losing):
            preprocess.run = run
            print(preprocess.main(["--runner", "DirectRunner"]))
        """)
    done = subprocess.run([sys.executable, "-c", code], cwd=TREE, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": TREE}, check=False)
    for path in re.findall(r"the traceback is in (\S+);", done.stderr):
        os.remove(path)
    assert done.stdout.split() == ["1", "1"], done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("beam-etl: failed: ")]
    assert said == [
        "beam-etl: failed: no inputs match",
        "beam-etl: failed: worker process 77 died of SIGKILL (the kernel's out-of-memory killer sends SIGKILL: "
        "`dmesg` says whether it did); the runner said: Channel closed prematurely. Run the same command again "
        "to go on from what it finished"], done.stderr


def test_a_ctrl_c_is_recognised_however_beam_passes_it_on():
    assert failure_report.is_interrupt(KeyboardInterrupt())
    wrapped = RuntimeError("KeyboardInterrupt [while running 'Preprocess/ProcessExamples/DecodeResizeEncode']")
    assert failure_report.is_interrupt(wrapped)
    from_worker = RuntimeError("Pipeline failed:\nTraceback (most recent call last):\n  File \"x\", line 1\nKeyboardInterrupt\n")
    assert failure_report.is_interrupt(from_worker)
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("step failed")
    except RuntimeError as chained:
        assert failure_report.is_interrupt(chained)
    assert not failure_report.is_interrupt(RuntimeError("4 of 39 inputs rejected"))
