"""``benchmarks.safety_costs`` times the lease, the ownership check and the commit over an output
of the job: it stopped working unnoticed once the ownership check refused the bare manifest it
made up (an import check cannot tell)."""

from __future__ import annotations

import json

import pytest

from beam_etl.tools import sample_data
from benchmarks import safety_costs

pytestmark = pytest.mark.slow


def test_safety_costs_replaces_an_output_of_the_job_with_a_run_of_the_same_files(tmp_path):
    data = tmp_path / "data"
    sample_data.generate(str(data), num_images=12, seed=0)
    earlier = safety_costs.earlier_output(str(tmp_path), str(data), 2)
    manifest = json.loads((tmp_path / "earlier" / "manifest.json").read_text())
    figures = safety_costs.per_run(str(tmp_path), earlier)
    assert figures["files"] == len(manifest["files"]) and figures["shards"] == 6  # (2 a split)
    assert all(figures[name] > 0 for name in ("check_output_ms", "lease_ms", "commit_ms"))
    assert not (tmp_path / "out").exists()  # (replaced, then removed)
