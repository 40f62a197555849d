"""Runs of the whole job for tests that read its output."""

from __future__ import annotations

from pipelines import preprocess


def run_job(pets_dir, out, *extra) -> dict:
    """The job on the shared dataset at 40x32 in 2 shards per split; returns the manifest."""
    return preprocess.run(["--oxford_pets", str(pets_dir), "--output", str(out), "--num_shards", "2",
                           "--image_size", "40x32", *extra])

