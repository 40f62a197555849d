"""Runs of the whole job for tests that read its output."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from beam_etl.output_layout import CACHE_DIR, CHANGES_FILE, UP_TO_DATE, UP_TO_DATE_FILES
from pipelines import preprocess
from tests.support import full_disk

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_job(pets_dir, out, *extra) -> dict:
    """The job on the shared dataset at 40x32 in 2 shards per split; returns the manifest."""
    return preprocess.run(["--oxford_pets", str(pets_dir), "--output", str(out), "--num_shards", "2",
                           "--image_size", "40x32", *extra])


def job_process(argv: list[str], crash_at: str | None = None, temporary: pathlib.Path | None = None,
                max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """The job as a user starts it, with ``argv``, in its own process (killed at ``crash_at``,
    :mod:`beam_etl.beam.crash`; ``temporary``: its temporary folder, where a killed process that
    ran TensorFlow leaves its autograph files; ``max_file_bytes``: the largest file it may make, as
    if the disk were full)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **({"TMPDIR": str(temporary)} if temporary else {}))
    env.pop("BEAM_ETL_CRASH_AT", None)
    if crash_at:
        env["BEAM_ETL_CRASH_AT"] = crash_at
    command = (full_disk.module_command("pipelines.preprocess", max_file_bytes) if max_file_bytes
               else [sys.executable, "-m", "pipelines.preprocess"])
    return subprocess.run([*command, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


# A command of ``beam-etl`` run by ``python -c``, which an alarm stops after its seconds with "HUNG"
# (a read of a FIFO waits for ever for a writer).
_HANG_GUARDED = ("import signal, sys\n"
                 "from pipelines import cli\n"
                 "def hung(*_):\n"
                 "    print('HUNG'); sys.stdout.flush(); sys.exit(9)\n"
                 "signal.signal(signal.SIGALRM, hung)\n"
                 "signal.alarm(int(sys.argv[1]))\n"
                 "sys.exit(cli.main(sys.argv[2:]))\n")


def hang_guarded(command: list, seconds: int = 20) -> subprocess.CompletedProcess:
    """``beam-etl COMMAND`` in its own process, stopped after ``seconds`` with "HUNG" on stdout."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("BEAM_ETL_CRASH_AT", None)
    return subprocess.run([sys.executable, "-c", _HANG_GUARDED, str(seconds), *map(str, command)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=seconds + 100, check=False)


# Everything but the manifest (its run id and timings) is the same bytes in two runs of the same
# inputs and flags: the transform graph's files too, copied from the one template of the tests'
# cache (beam_etl.beam.transform_template), its statistics in its assets. (What changed against
# the output a run replaced is no part of what the run makes of its inputs.)
_NOT_BYTE_STABLE = {"manifest.json", CHANGES_FILE, UP_TO_DATE, UP_TO_DATE_FILES}


def output_files(out: pathlib.Path) -> dict[str, bytes]:
    """Every file of the output in ``out`` by name (not the cache of outcomes beside it, nor
    what the up-to-date check keeps)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and str(p.relative_to(out)) not in _NOT_BYTE_STABLE
            and not str(p.relative_to(out)).startswith(CACHE_DIR + "/")}


def comparable(manifest: dict) -> dict:
    """``manifest`` without what differs between two runs of the same inputs and flags: the
    output folder and whether it replaced another (and what changed against it), the run id, and
    the manifest's own entry."""
    manifest = {**manifest, "flags": {k: v for k, v in manifest["flags"].items() if k not in ("output", "overwrite")},
                "files": {k: v for k, v in manifest["files"].items() if k not in _NOT_BYTE_STABLE}}
    manifest.pop("run_id")
    manifest.pop("changes", None)
    return manifest
