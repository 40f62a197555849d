"""Which modules a piece of the job's code is made of, read from their source: a module it
reaches in any way Python imports one is part of its version."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from beam_etl import code_version
from beam_etl.beam import example_cache, transform_template


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
