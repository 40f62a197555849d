"""The layout's rules, checked on the source: a file's folder says what it may import, and no
module imports another in a cycle."""

from __future__ import annotations

import pathlib

import pytest

from beam_etl import code_version

ROOT = pathlib.Path(__file__).resolve().parents[2]
_HEAVY = ("apache_beam", "tensorflow", "tensorflow_transform", "tfx_bsl", "dask", "distributed")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, top_level_only: bool) -> set[str]:
    """What the module at ``path`` imports (relative imports resolved): the reading of the
    source the code's versions are made with (:func:`beam_etl.code_version.imports`)."""
    return code_version.imports(str(path), _module_name(path), top_level_only)


def _files(folder: str, recursive: bool = True) -> list[pathlib.Path]:
    base = ROOT / folder
    return sorted(base.rglob("*.py") if recursive else base.glob("*.py"))


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# folder -> (beam_etl packages it may import, heavy libraries it may import at module level,
# heavy libraries it may import inside a function: only when that function runs)
RULES = {
    # the top level: its own modules only; TensorFlow only where a reader needs it
    "beam_etl": ((), (), ("tensorflow",)),
    "beam_etl/image": (("beam_etl.image",), (), ()),
    # a trainer needs no Beam
    "beam_etl/loader": (("beam_etl.image", "beam_etl.loader"), ("tensorflow", "tensorflow_transform"),
                        ("tensorflow", "tensorflow_transform")),
    "beam_etl/tools": (("beam_etl.image", "beam_etl.loader", "beam_etl.tools"), ("tensorflow",), ("tensorflow",)),
    "beam_etl/beam": (("beam_etl.image", "beam_etl.loader", "beam_etl.beam"), _HEAVY[:-2], _HEAVY[:-2]),
}
SUBPACKAGES = ("beam_etl.image", "beam_etl.loader", "beam_etl.tools", "beam_etl.beam")
# The top-level modules that may import TensorFlow inside a function (docs/design.md): the
# records' readers, and the reader of an output that is not local.
TOP_LEVEL_TENSORFLOW = ("beam_etl/schema.py", "beam_etl/lineage.py")
# The exceptions, each for a reason: the command users know forwards to the loader's command
# line, and that command line trains the development U-Net for --train_steps (imported lazily).
EXCEPTIONS = {("beam_etl/train_loader.py", "beam_etl.loader"), ("beam_etl/loader/load_run.py", "beam_etl.tools")}


@pytest.mark.parametrize("folder", sorted(RULES))
def test_a_folder_imports_only_what_its_layer_may(folder):
    allowed_packages, allowed_heavy, allowed_lazily = RULES[folder]
    problems = []
    for path in _files(folder, recursive=folder != "beam_etl"):
        for name in _imports(path, top_level_only=False):
            if _within(name, "beam_etl") and any(_within(name, package) for package in SUBPACKAGES):
                if not any(_within(name, package) for package in allowed_packages):
                    if not any((str(path.relative_to(ROOT)), package) in EXCEPTIONS
                               for package in SUBPACKAGES if _within(name, package)):
                        problems.append(f"{path.relative_to(ROOT)} imports {name}")
        for name in _imports(path, top_level_only=True):
            if any(_within(name, heavy) for heavy in _HEAVY) and not any(
                    _within(name, heavy) for heavy in allowed_heavy):
                problems.append(f"{path.relative_to(ROOT)} imports {name} at module level")
        lazily = allowed_lazily if folder != "beam_etl" or str(path.relative_to(ROOT)) in TOP_LEVEL_TENSORFLOW else ()
        for name in _imports(path, top_level_only=False):
            if any(_within(name, heavy) for heavy in _HEAVY) and not any(_within(name, heavy) for heavy in lazily):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not problems, problems


def test_the_command_loads_no_beam_tensorflow_or_image_code_before_its_up_to_date_check():
    """``python -m pipelines.preprocess`` checks whether the output is up to date, and forks its
    workers' warm parent, before it loads Beam: the check is quick only if nothing heavy is
    imported first, and the code digested as the run starts must not be loaded yet."""
    import subprocess
    import sys

    code = ("import sys, pipelines.preprocess; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('apache_beam', 'tensorflow', 'tensorflow_transform', 'numpy', 'cv2', 'PIL', 'dask') "
            "or m.startswith(('beam_etl.image', 'beam_etl.loader'))))")
    printed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    assert printed.strip() == "[]"


def test_nothing_imports_the_commands():
    """``pipelines`` holds the commands: the top of the layers, which no module imports."""
    problems = [f"{path.relative_to(ROOT)} imports {name}" for path in _files("beam_etl") + _files("beam_dask")
                for name in _imports(path, top_level_only=False) if _within(name, "pipelines")]
    assert not problems, problems


def test_the_dask_runner_knows_nothing_of_the_job():
    problems = [f"{path.relative_to(ROOT)} imports {name}" for path in _files("beam_dask")
                for name in _imports(path, top_level_only=False) if _within(name, "beam_etl")]
    assert not problems, problems


def test_no_module_imports_another_in_a_cycle():
    paths = _files("beam_etl") + _files("beam_dask") + _files("pipelines")
    modules = {_module_name(path): path for path in paths}
    graph = {}
    for module, path in modules.items():
        graph[module] = {name if name in modules else name.rsplit(".", 1)[0]
                         for name in _imports(path, top_level_only=True)} & set(modules) - {module}
    # A package's __init__ naturally imports its own modules: those edges are not cycles.
    for module in graph:
        graph[module] = {target for target in graph[module] if not _within(target, module)}
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(target):] + [target])}")
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert len(state) == len(modules) > 40
