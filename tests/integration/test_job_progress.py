"""The job's progress line, from its workers' files, on each way the job runs locally."""

from __future__ import annotations

import functools
import io
import re

import pytest

from beam_etl.beam import job_progress, launch
from beam_etl.progress import ProgressLine
from tests.support.jobs import run_job

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", [[], ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
                                  ["--dask_local_workers", "2"]])
def test_the_job_shows_images_found_and_images_done(pets_dir, tmp_path, monkeypatch, mode):
    log = io.StringIO()
    monkeypatch.setattr(launch, "ProgressLine", functools.partial(ProgressLine, stream=log, every_s=0.0))
    monkeypatch.setattr(job_progress, "_interval", lambda output: 0.02)  # the launcher's reads
    manifest = run_job(pets_dir, tmp_path / "out", *mode)
    lines = log.getvalue().splitlines()
    images = len(list((pets_dir / "images").iterdir()))
    assert lines[0] == f"beam-etl: {images} images found"
    done = [int(match.group(1)) for line in lines[1:]
            if (match := re.fullmatch(rf"beam-etl: (\d+) of {images} images done \(\d+%\).*", line))]
    assert len(done) == len(lines) - 1 and done and done == sorted(done)
    # The workers' counts reached this process; never more than the inputs that reached the
    # per-image step (the last count may be cleared with .incomplete/ before it is read).
    assert 0 < max(done) <= manifest["num_inputs"] - manifest["rejected"]["by_stage"].get("pair", 0)
