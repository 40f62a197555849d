"""Which modules a piece of the job's code is made of, read from their source: a module it
reaches in any way Python imports one is part of its version."""

from __future__ import annotations

import hashlib
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from beam_etl import code_version
from beam_etl.beam import example_cache, transform_template

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``pkg`` on the path, written from ``{relative path: source}``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    forget = (code_version.closure.cache_clear, code_version._package_folder.cache_clear)  # pylint: disable=protected-access
    for clear in forget:
        clear()

    def write(files: dict[str, str]):
        for name, source in files.items():
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
        code_version.closure.cache_clear()
        return tmp_path

    yield write
    for clear in forget:
        clear()


def test_every_way_of_importing_a_module_of_the_package_is_followed(package):
    package({
        "pkg/__init__.py": "",
        "pkg/image/__init__.py": "SCALE = 2  # a constant a package holds\n",
        "pkg/image/chain.py": """
            from . import relative
            from .sibling import helper
            from pkg.absolute import thing
            import pkg.dotted.leaf

            def lazy():
                from ..inside_a_function import late
                return late
        """,
        "pkg/image/relative.py": "from ..deeper import name\n",
        "pkg/image/sibling.py": "def helper(): pass\n",
        "pkg/absolute.py": "thing = 1\n",
        "pkg/dotted/__init__.py": "",
        "pkg/dotted/leaf.py": "",
        "pkg/inside_a_function.py": "late = 1\n",
        "pkg/deeper.py": "name = 1\n",
        "pkg/unreached.py": "",
        "pkg/image/unreached.py": "",
    })
    assert code_version.closure(("pkg.image.chain",)) == (
        "pkg", "pkg.absolute", "pkg.deeper", "pkg.dotted", "pkg.dotted.leaf", "pkg.image", "pkg.image.chain",
        "pkg.image.relative", "pkg.image.sibling", "pkg.inside_a_function")


def test_what_runs_as_a_module_is_imported_is_told_from_what_a_function_imports(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(textwrap.dedent("""
        import top
        try:
            import in_try
        except ImportError:
            in_try = None
        if True:
            from in_if import name
        class Holder:
            import in_class

        def function():
            import in_function
            return lambda: __import__("x")
    """))
    assert code_version.imports(str(path), "module", top_level_only=True) == {
        "top", "in_try", "in_if", "in_if.name", "in_class"}
    assert "in_function" in code_version.imports(str(path), "module")


def test_a_change_in_a_module_the_code_reaches_only_through_others_is_a_new_version(package):
    root = package({"pkg/__init__.py": "", "pkg/image/__init__.py": "SCALE = 2\n",
                    "pkg/image/chain.py": "from . import helper\n", "pkg/image/helper.py": "FACTOR = 1\n",
                    "pkg/other.py": ""})
    before = code_version.code_version(code_version.closure(("pkg.image.chain",)))
    for path, source in [("pkg/image/helper.py", "FACTOR = 3\n"), ("pkg/image/__init__.py", "SCALE = 4\n")]:
        (root / path).write_text(source)
        code_version.closure.cache_clear()
        after = code_version.code_version(code_version.closure(("pkg.image.chain",)))
        assert after != before, path
        before = after
    (root / "pkg/other.py").write_text("UNRELATED = 1\n")
    assert code_version.code_version(code_version.closure(("pkg.image.chain",))) == before


def test_digests_taken_earlier_describe_the_files_as_they_were(package):
    root = package({"pkg/__init__.py": "", "pkg/chain.py": "from pkg import helper\n", "pkg/helper.py": "A = 1\n"})
    taken = {str(root / name): hashlib.sha256((root / name).read_bytes()).digest()
             for name in ("pkg/__init__.py", "pkg/chain.py", "pkg/helper.py")}
    then = code_version.code_version(code_version.closure(("pkg.chain",)), taken)
    (root / "pkg/helper.py").write_text("A = 2\n")
    assert code_version.code_version(code_version.closure(("pkg.chain",)), taken) == then
    assert code_version.changed(then) == ["pkg.helper"]


def test_the_chain_and_the_transform_graph_are_versioned_with_what_they_import():
    chain = code_version.closure(code_version.CHAIN_ENTRIES)
    assert {"beam_etl", "beam_etl.image", "beam_etl.beam", "beam_etl.config", "beam_etl.image.resizing",
            "beam_etl.image.decoding", "beam_etl.image.encoding", "beam_etl.schema"} <= set(chain)
    assert "beam_etl.beam.process_examples" not in chain and "beam_etl.beam.sink" not in chain
    graph = code_version.closure(transform_template.GRAPH_ENTRIES)
    assert {"beam_etl.beam.transform_template", "beam_etl.loader", "beam_etl.loader.transform_graph",
            "beam_etl.loader.tf_decoding", "beam_etl.metadata_schema", "beam_etl.schema"} <= set(graph)
    assert example_cache.version.__module__ in chain


_LONG_LIVED_WORKER = """
from beam_etl import code_version
from beam_etl.beam import process_examples, statistics, transform_template  # (as a worker that ran a job)
from beam_etl.image.pixel_statistics import Totals

def started_with():  # (what a command started now takes: the files as they are)
    return (code_version.code_version(code_version.closure(code_version.CHAIN_ENTRIES)),
            code_version.code_version(code_version.closure(transform_template.GRAPH_ENTRIES)))

chain, graph = started_with()
print("BEFORE", code_version.stale(chain, code_version.CHAIN_ENTRIES),
      code_version.stale(graph, transform_template.GRAPH_ENTRIES))
for name in ("beam_etl/image/chain.py", "beam_etl/loader/transform_graph.py"):
    with open(name, "a", encoding="utf-8") as source:
        source.write("\\nEDITED_AFTER_THE_WORKER_IMPORTED_IT = True\\n")
chain, graph = started_with()
try:
    process_examples.ProcessExamplesFn(None, chain).setup()
except RuntimeError as error:
    print("CHAIN", error)
try:
    statistics.write_statistics(Totals(), "out", "run", {}, None, graph)
except RuntimeError as error:
    print("GRAPH", error)
"""


def test_a_long_lived_worker_that_imported_the_code_before_it_changed_runs_no_job_of_the_new_code(tmp_path):
    """A Dask cluster's worker keeps the modules it imported while their files change: a run of
    the new code found the files as it expected, and the worker cached the old chain's outcomes
    and the old graph's template under the new code's versions. A copy of the code, edited after
    a process imported it."""
    for package in ("beam_etl", "pipelines", "beam_dask"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", _LONG_LIVED_WORKER], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "BEFORE [] []"
    assert lines[1].startswith("CHAIN the per-image code here is not the code the run started with "
                               "(beam_etl.image.chain): ") and "imported it before it changed" in lines[1]
    assert lines[2].startswith("GRAPH the transform graph's code here is not the code the run started with "
                               "(beam_etl.loader.transform_graph): ")
