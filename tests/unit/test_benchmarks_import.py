"""Every benchmark under ``benchmarks/`` imports (a helper moved once and one stopped working
unnoticed); ``gpu_demand``, which needs the GPU machine's PyTorch, at least compiles."""

from __future__ import annotations

import importlib
import pathlib
import py_compile

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"
NEEDS_TORCH = {"gpu_demand"}  # run where PyTorch is (BENCHMARKS.md), not in this environment
HELPERS = {"__init__", "common"}  # what the benchmarks share: no command of its own
MODULES = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem not in HELPERS)


def test_every_benchmark_is_known():
    assert len(MODULES) >= 14 and NEEDS_TORCH <= set(MODULES)
    importlib.import_module("benchmarks.common")


@pytest.mark.parametrize("name", [name for name in MODULES if name not in NEEDS_TORCH])
def test_each_benchmark_imports(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(getattr(module, "main", None)), f"benchmarks/{name}.py has no main()"


@pytest.mark.parametrize("name", sorted(NEEDS_TORCH))
def test_the_benchmarks_that_need_pytorch_compile(name):
    py_compile.compile(str(BENCHMARKS / f"{name}.py"), doraise=True)
