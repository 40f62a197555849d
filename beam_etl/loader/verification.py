"""What ``verify`` checks (:mod:`beam_etl.loader.verify`, the command): an output against its
manifest, every file there, its size, crc32c and record count, each shard's first record of the
pixels the manifest describes; each shard against the other files that count or name its records
(its record index's offsets, the lineage index's keys), the rejected list against the manifest's
tallies, the changes file against its counts; and no file of the job's that the manifest does not
list (a later format's file beside an earlier format's manifest included), nor a folder of the
job's that is a link (the job writes none, and the files behind it are not walked). Needs
TensorFlow's file systems only.
"""

from __future__ import annotations

from beam_etl.loader.cross_checks import CrossChecks
from beam_etl.loader.dataset import load_manifest
from beam_etl.loader.listed_files import (LINKED_FOLDER, OutputMismatchError, check_file, first_record,
                                          lists_files, record_problem, walk)
from beam_etl.manifest_checks import consistency_problems, shape_problems, split_problems
from beam_etl.output_layout import INCOMPLETE_DIR, MANIFEST, first_format, is_job_file


def verify(data_dir: str) -> dict[str, str]:
    """``{name: problem}`` for every file that does not match the manifest, or says otherwise of
    the same records than another file does (:mod:`beam_etl.loader.cross_checks`); empty: intact."""
    path = f"{data_dir.rstrip('/')}/{MANIFEST}"
    manifest = load_manifest(data_dir)
    try:
        listed = lists_files(manifest)
    except OutputMismatchError as error:  # (its format says it lists them, or it is a later format's)
        return {MANIFEST: str(error)}
    if not listed:
        raise ValueError(f"{path} has format_version {manifest.get('format_version')}, which lists "
                         "no checksums: rerun the job to verify its output")
    shape = shape_problems(manifest)
    if shape:  # (nothing else can be read of it)
        return {MANIFEST: "; ".join(shape)}
    # (its splits' files, in a format that lists none: consistency_problems checks them from the next)
    described = consistency_problems(manifest) or [problem for split in sorted(manifest["splits"])
                                                   for problem in split_problems(manifest, split)[:1]]
    if described:  # (the files are checked against a manifest that says what is so)
        return {MANIFEST: "; ".join(described)}
    problems = {}
    shards = {name for info in manifest["splits"].values() for name in info["files"]}
    checks = CrossChecks(manifest)  # (what the files say of the same records, held against one another)
    for name, entry in sorted(manifest["files"].items()):
        path = f"{data_dir.rstrip('/')}/{name}"
        problem = check_file(path, entry, lambda data, name=name: checks.add(name, data))
        if problem is None and name in shards and entry.get("num_examples"):  # (what the loader decodes by)
            try:  # (the file matched its checksum: its framing is whole)
                record = first_record(path, entry["bytes"])
                problem = None if record is None else record_problem(record, manifest["image"])
            except ValueError as error:
                problem = str(error)
        if problem:
            problems[name] = problem
    problems.update((name, problem) for name, problem in checks.problems().items() if name not in problems)
    names, links = walk(data_dir)
    for name in names:
        if (is_job_file(name) and name != MANIFEST and name not in manifest["files"]
                # (.incomplete as a file: a walk that met a run's folder as the run removed it)
                and not _of_a_run(name)):
            problem = ("not listed in the manifest" if manifest["format_version"] >= first_format(name)
                       else checks.beside(name))  # (a later format's file: the format lowered?)
            if problem:
                problems[name] = problem
    for name in links:  # (a job's folder: whatever is behind it would be passed over unseen)
        if is_job_file(name) and not _of_a_run(name):
            problems[name] = LINKED_FOLDER
    return problems


def _of_a_run(name: str) -> bool:
    """Whether ``name`` is the folder of a run that writes here now, or in it (not the output's)."""
    return name == INCOMPLETE_DIR or name.startswith(INCOMPLETE_DIR + "/")


def reading_failed(data_dir: str, error: Exception) -> str | None:
    """What to tell of a read of ``data_dir`` that failed with TensorFlow's ``error`` (a file cut
    short, corrupt in place or gone: TensorFlow's readers often name no file): the files that do
    not match the manifest, named; None when every file matches (the failure is not the output's)."""
    try:
        problems = verify(data_dir)
    except (FileNotFoundError, ValueError):  # (not verifiable: replaced meanwhile, or of a format without checksums)
        return None
    if not problems:
        return None
    named = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
    said = (getattr(error, "message", None) or str(error) or type(error).__name__).strip().splitlines()
    return f"reading failed ({said[0] if said else type(error).__name__}); checked against the manifest: {named}"
