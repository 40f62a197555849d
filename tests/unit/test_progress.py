"""The progress line: live on a terminal, whole periodic lines anywhere else, honest numbers."""

from __future__ import annotations

import io
import time

import pytest

from beam_etl.beam import job_progress, launch
from beam_etl.progress import ProgressLine, describe


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_describe_says_done_total_rate_and_time_left():
    assert describe(3200, 7390, "images", 410.0) == \
        "3,200 of 7,390 images done (43%), 410 images/s, about 10 s left"
    assert describe(0, 7390, "images", 0.0) == "0 of 7,390 images done (0%)"
    assert describe(1200, None, "images", 300.0) == "1,200 images done, 300 images/s"
    assert describe(100, 100, "batches", 5.0) == "100 of 100 batches done (100%), 5 batches/s"
    assert describe(10, 100_000, "images", 10.0).endswith("about 2 h 46 min left")


def test_work_counted_twice_is_never_shown_as_more_than_all_of_it():
    # A bundle retried after a worker is lost counts again (its first attempt's count stays).
    assert describe(330, 300, "images", 20.0) == \
        "330 images done, more than the 300 found (retried work counts again, as do images added since), 20 images/s"
    # A count that stopped at its limit is no total.
    assert launch._counted(launch.INPUTS_TO_COUNT) is None  # pylint: disable=protected-access
    assert launch._counted(launch.INPUTS_TO_COUNT - 1) == launch.INPUTS_TO_COUNT - 1  # pylint: disable=protected-access


def test_in_a_log_file_whole_lines_and_never_a_carriage_return(monkeypatch):
    clock = iter([0.0, 1.0, 5.0, 11.0, 12.0, 25.0, 26.0])
    monkeypatch.setattr("beam_etl.progress.time.perf_counter", lambda: next(clock))
    log = io.StringIO()
    line = ProgressLine("images", 1000, stream=log, every_s=10.0)  # started at 0
    for done in (100, 300, 600, 500, 900, 1000):  # at 1, 5, 11, 12, 25, 26 s
        line.update(done)
    line.close()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    # At 11 s (600 done, 500 more since the first progress at 1 s) and 25 s (never less than shown).
    assert log.getvalue().splitlines() == [
        "beam-etl: 600 of 1,000 images done (60%), 50 images/s, about 8 s left",
        "beam-etl: 900 of 1,000 images done (90%), 33 images/s, about 3 s left"]


def test_on_a_terminal_one_line_redrawn_then_cleared():
    terminal = Terminal()
    line = ProgressLine("images", 10, stream=terminal, live_every_s=0.0)
    for done in range(1, 4):
        line.update(done)
    line.message("10 inputs found")
    line.update(5)
    line.close()
    text = terminal.getvalue()
    assert text.count("\r") == 6 and text.endswith("\r\x1b[K") and "\n" in text
    assert text.split("\n")[0].endswith("beam-etl: 10 inputs found")


def test_the_watcher_adds_up_every_workers_file(tmp_path, monkeypatch):
    monkeypatch.setattr(job_progress, "_interval", lambda output: 0.01)
    reporters = [job_progress.Reporter(str(tmp_path)) for _ in range(3)]
    for count, reporter in zip((5, 7, 0), reporters):
        reporter.add(count)
        reporter.flush()
    assert job_progress.read_done(str(tmp_path)) == 12
    log = io.StringIO()
    with job_progress.Watcher(str(tmp_path), ProgressLine("images", stream=log, every_s=0.0), lambda: 40):
        reporters[2].add(9)
        reporters[2].flush()
        time.sleep(0.3)
    lines = log.getvalue().splitlines()
    assert lines[0] == "beam-etl: 40 images found"
    assert lines[-1].startswith("beam-etl: 21 of 40 images done (52%)")


@pytest.mark.parametrize("total", [None, 0])
def test_no_total_when_the_sources_cannot_say(tmp_path, total):
    log = io.StringIO()
    with job_progress.Watcher(str(tmp_path), ProgressLine("images", stream=log, every_s=0.0), lambda: total):
        pass
    assert " found" not in log.getvalue()
