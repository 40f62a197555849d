"""Running a benchmark script against another revision's code (``dask_ab``, ``loader_ab``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_in(tree: str, script: str, *args: str) -> dict:
    """``script`` with ``args`` in a fresh process whose imports come from ``tree`` (its working
    directory and ``PYTHONPATH``); returns the JSON object on the last line it prints.

    The script is run by path, so the other revision need not have it; it must import nothing
    at its top that the other revision lacks (this module included).
    """
    completed = subprocess.run(
        [sys.executable, os.path.abspath(script), *args],
        cwd=tree, check=True, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": tree, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return json.loads(completed.stdout.strip().splitlines()[-1])
