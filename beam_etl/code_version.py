"""The version of a piece of the job's code, as the SHA-256 of its modules' source: what a cache
of the code's results is keyed by, so that a change in the code finds no stale result.

Which modules a piece of code is made of is read from their source, not listed by hand
(:func:`closure`): its entry modules, every module of the job they import (at any depth,
anywhere in a module: inside a function, relatively), and each package on the way, whose
``__init__`` runs as they are imported. A helper module added to the chain, or a constant put
in a package's ``__init__``, is part of the version the moment it is imported.

A version describes the code that runs only if the files did not change between their import
and their reading: a run takes the digests of the job's files as it starts, before any of them
is imported (the chain's modules are picked among them later), and each process that runs the
chain checks, once it has imported it, that the files are still those (:func:`changed`). Standard library only: the command reads it first."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import os

# The code that makes an outcome (beam_etl.beam.example_cache): the per-image chain, and the
# module that names, encodes and decodes its entries.
CHAIN_ENTRIES = ("beam_etl.image.chain", "beam_etl.beam.example_cache")


@functools.cache
def _package_folder(package: str) -> str | None:
    spec = importlib.util.find_spec(package)
    return spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None


def source_file(name: str) -> str | None:
    """The source file of the module or package ``name`` of a package of plain source files
    (``beam_etl``), found without importing anything but its top-level package; None when
    there is none of that name (a name defined in a module)."""
    top, *parts = name.split(".")
    folder = _package_folder(top)
    if folder is None:
        return None
    base = os.path.join(folder, *parts)
    for path in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(path):
            return path
    return None


def imports(path: str, name: str, top_level_only: bool = False) -> set[str]:
    """The absolute names the module ``name`` (source file ``path``) imports: each ``import``'s
    modules, and each ``from`` import's module and ``module.name`` for every name it takes;
    relative imports resolved against the module's package. ``top_level_only``: only those
    that run as the module is imported (in its body, its ``try``, ``if`` and ``class`` blocks;
    not in a function's)."""
    with open(path, "rb") as source:
        tree = ast.parse(source.read(), path)
    package = name if os.path.basename(path) == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _run_on_import(tree) if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _run_on_import(tree: ast.AST):
    """The nodes of ``tree`` outside any function or lambda: what runs as a module is imported."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(child for child in ast.iter_child_nodes(node)
                       if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


@functools.cache
def closure(entries: tuple[str, ...]) -> tuple[str, ...]:
    """``entries``, every module of their top-level packages that they import, at any depth,
    and every package that holds one of them, by name, sorted."""
    packages = {entry.split(".")[0] for entry in entries}
    seen, pending = set(), list(entries)
    while pending:
        name = pending.pop()
        path = source_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        pending.extend(".".join(parts[:end]) for end in range(1, len(parts)))  # its packages
        pending.extend(found for found in imports(path, name) if found.split(".")[0] in packages)
    return tuple(sorted(seen))


def code_version(module_names, digests: dict[str, bytes] | None = None) -> dict[str, str]:
    """``{module name: SHA-256 of its source}``, read without importing the modules; a module
    whose file is in ``digests`` (``{path: SHA-256}``, taken earlier) has that digest."""
    version = {}
    for name in module_names:
        path = source_file(name)
        if path is None:
            raise ModuleNotFoundError(f"the job has no module {name}")
        if digests is not None and path in digests:
            version[name] = digests[path].hex()
            continue
        with open(path, "rb") as source:
            version[name] = hashlib.sha256(source.read()).hexdigest()
    return version


def chain_version(digests: dict[str, bytes] | None = None) -> dict[str, str]:
    """The :func:`code_version` of the per-image chain: of :func:`closure` of
    :data:`CHAIN_ENTRIES` (``digests``: as for :func:`code_version`)."""
    return code_version(closure(CHAIN_ENTRIES), digests)


@functools.cache
def as_imported(entries: tuple[str, ...]) -> dict[str, str]:
    """The :func:`code_version` of :func:`closure` of ``entries`` as this process first took it.
    A module takes it as it is imported: it is then the code the process runs, which a
    long-lived process (a Dask cluster's worker) keeps while the files change under it."""
    return code_version(closure(entries))


def stale(version: dict[str, str], entries: tuple[str, ...]) -> list[str]:
    """The modules of ``version`` (the code a run started with) that this process runs another
    version of: changed on disk since (:func:`changed`), or imported before they changed
    (:func:`as_imported` of ``entries``)."""
    imported = as_imported(entries)
    return sorted(set(changed(version)) | {name for name in version.keys() | imported.keys()
                                           if version.get(name) != imported.get(name)})


def stale_message(what: str, modules: list[str]) -> str:
    """Why a worker refuses to run the ``what`` code (``modules``, :func:`stale`)."""
    return (f"the {what} code here is not the code the run started with ({', '.join(modules)}): on this "
            "machine, it changed on disk since the run started (run the command again); on a cluster "
            "(Dataflow, Dask), its workers run another version of beam-etl than the command, or imported it "
            "before it changed (restart the workers; rebuild the workers' image, or install the command's "
            "beam-etl on them)")


def changed(version: dict[str, str]) -> list[str]:
    """The modules of ``version`` whose source is no longer the one it was taken from (or is
    gone: a module removed or renamed)."""
    found = []
    for name, digest in version.items():
        try:
            now = code_version([name])[name]
        except (ImportError, OSError):  # (no module, or no source file, of that name)
            now = None
        if now != digest:
            found.append(name)
    return sorted(found)
