"""Commands run as a user that files' modes apply to, for tests of files another user made.

A test that takes a permission away (``chmod``) and runs a command as root would see root read
and write through it: as root, the command runs without the capabilities that override file
modes and ownership (``setpriv``, util-linux), so a file with mode 000 is unreadable to it as it
is to a user who does not own the file, and a file of another user's (``chown``) in a folder with
the sticky bit is not its to move."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

_OVERRIDES = "-dac_override,-dac_read_search,-fowner"
_ROOT = pathlib.Path(__file__).resolve().parents[2]


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run so that file modes apply to it."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--inh-caps={_OVERRIDES}", f"--bounding-set={_OVERRIDES}", *argv]


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` from the project's root, as :func:`unprivileged`."""
    return subprocess.run(unprivileged([sys.executable, "-m", module, *args]), cwd=_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def run_python(code: str) -> subprocess.CompletedProcess:
    """``python -c code`` from the project's root, as :func:`unprivileged`."""
    return subprocess.run(unprivileged([sys.executable, "-c", code]), cwd=_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)

