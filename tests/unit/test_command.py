"""``beam-etl``: the console command installed with the package, and its subcommands."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

from beam_etl.tools import sample_data
from pipelines import cli

COMMAND = pathlib.Path(sys.executable).parent / "beam-etl"


def _run(*args):
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, timeout=300)


def test_the_installed_command_lists_its_subcommands():
    result = _run("--help")
    assert result.returncode == 0
    for name, (module, _, _) in cli.COMMANDS.items():
        assert f"  {name}" in result.stdout and f"python -m {module}" in result.stdout
    assert set(cli.COMMANDS) == {"preprocess", "load", "verify", "diff", "prune-cache", "report", "sample-data"}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_subcommand_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: beam-etl {name} ")
    assert "``" not in shown and ":mod:`" not in shown  # (the docstrings' markup stays out of --help)


def test_an_unknown_command_fails_naming_it(capsys):
    assert cli.main(["preproces"]) == 2
    assert "'preproces'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_the_reading_commands_load_no_beam(tmp_path):
    code = ("import sys\nfrom pipelines import cli\n"
            f"status = cli.main(['verify', {str(tmp_path)!r}])\n"
            "print(status, sorted(m for m in ('apache_beam', 'dask') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip().splitlines()[-1] == "2 []"  # no manifest there: exit 2, and no Beam loaded


def test_sample_data_and_verify_through_the_command(tmp_path):
    assert _run("sample-data", "--output", str(tmp_path / "data"), "--num_images", "3").returncode == 0
    assert len(list((tmp_path / "data" / "images").glob("*.jpg"))) == 3
    missing = _run("verify", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "manifest.json" in missing.stderr


def test_sample_data_refuses_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / "old.jpg").write_bytes(b"x")
    with pytest.raises(SystemExit) as exited:
        cli.main(["sample-data", "--output", str(tmp_path), "--num_images", "2"])
    assert exited.value.code == 2 and "is not empty" in capsys.readouterr().err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["old.jpg"]


@pytest.mark.parametrize("output,named", [
    ("", "--output '': must name a folder"),  # (not the current folder, whose files it would overwrite)
    ("~/data", "--output '~/data': the shell did not expand '~'"),
    ("gs://bucket/data", "--output 'gs://bucket/data': a local folder"),
    ("dangling", "--output 'dangling' is a link to nothing"),
    ("a_file/data", "--output 'a_file/data': cannot make the folder"),
])
def test_sample_data_refuses_an_output_it_cannot_write_cleanly_touching_nothing(tmp_path, monkeypatch, capsys,
                                                                                output, named):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "Russian_Blue_1.jpg").write_bytes(b"the user's own")
    (tmp_path / "a_file").write_bytes(b"x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    before = sorted((path, path.lstat().st_size) for path in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["sample-data", "--output", output, "--num_images", "1"])
    assert exited.value.code == 2 and named in capsys.readouterr().err
    assert sorted((path, path.lstat().st_size) for path in tmp_path.rglob("*")) == before


def test_sample_data_refuses_more_images_than_the_disk_holds(tmp_path, monkeypatch, capsys):
    free = 1000 * sample_data.PAIR_BYTES  # a disk with room for 1,000 pairs
    monkeypatch.setattr(sample_data.shutil, "disk_usage",
                        lambda path: types.SimpleNamespace(total=free, used=0, free=free))
    with pytest.raises(SystemExit) as exited:
        cli.main(["sample-data", "--output", str(tmp_path / "data"), "--num_images", "1001"])
    assert exited.value.code == 2 and "--num_images 1001: about 40 MB, and the disk" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("argv, named", [
    (["verify", ""], "argument OUT: invalid value '': must name the job's output folder"),
    (["diff", "", "b"], "argument OLD: invalid value ''"),
    (["report", ""], "argument OUT: invalid value ''"),
    (["prune-cache", ""], "argument OUT: invalid value ''"),
    (["load", "--data", ""], "--data: invalid value ''"),
    # an abbreviation is a flag the command does not know (as preprocess, load and sample-data)
    (["diff", "a", "b", "--count"], "unrecognized arguments: --count"),
    (["verify", "a", "--verb"], "unrecognized arguments: --verb"),
    (["prune-cache", "a", "--cac", "c"], "unrecognized arguments: --cac"),
    (["report", "a", "--exam", "3"], "unrecognized arguments: --exam"),
])
def test_the_reading_commands_refuse_an_empty_output_or_an_abbreviated_flag(argv, named, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2 and named in capsys.readouterr().err


@pytest.mark.parametrize("argv, named", [
    (["preprocess", "--images", "a/*.jpg", "--masks", "a/*.png", "--output", "o", "--shard_size_mb", "-inf"],
     "--shard_size_mb: invalid value '-inf': must be within"),
    (["preprocess", "--images", "a/*.jpg", "--masks", "a/*.png", "--output", "o", "--jpeg_quality", "-1e2"],
     "--jpeg_quality: invalid value '-1e2'"),
    (["load", "--data", "o", "--batch_size", "-NaN"], "--batch_size: invalid value '-NaN'"),
    (["report", "o", "--examples", "-.5E+3"], "--examples: invalid value '-.5E+3'"),
    (["sample-data", "--output", "o", "--num_images", "-1e3"], "--num_images: invalid int value: '-1e3'"),
])
def test_a_number_with_a_minus_sign_is_refused_as_the_flag_s_value_naming_both(argv, named, capsys):
    # (argparse's own parser calls -inf, -1e5 or -nan an unknown flag and says the flag's value is missing)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    error = capsys.readouterr().err
    assert exited.value.code == 2 and named in error and "expected one argument" not in error


_HEAVY = ("tensorflow", "tensorflow_transform", "keras")
_LOAD = [["-m", "beam_etl.train_loader"], ["-m", "beam_etl.loader.cli"], [str(COMMAND), "load"]]
_VERIFY = [["-m", "beam_etl.loader.verify"], [str(COMMAND), "verify"]]
_REPORT = [["-m", "beam_etl.loader.report"], [str(COMMAND), "report"]]


@pytest.mark.parametrize("command, argv, named", [
    *[(command, ["--data", "OUT", "--bogus"], "unrecognized arguments: --bogus") for command in _LOAD],
    *[(command, ["--data", "OUT", "--batch_size", "0"], "--batch_size: invalid value '0': must be a positive")
      for command in _LOAD],
    (_LOAD[0], ["--data", "OUT", "--steps", str(2 ** 63)],
     f"--steps: invalid value '{2 ** 63}': must be at most 2**63 - 1"),
    (_LOAD[0], ["--data", "OUT", "--preview", "MISSING/grid.png"],
     "--preview 'MISSING/grid.png': folder 'MISSING' does not exist"),
    *[(command, ["OUT", "--bogus"], "unrecognized arguments: --bogus") for command in _VERIFY],
    *[(command, [""], "argument OUT: invalid value '': must name the job's output folder") for command in _VERIFY],
    *[(command, ["OUT", "--bogus"], "unrecognized arguments: --bogus") for command in _REPORT],
    *[(command, ["OUT", "--examples", "0"], "--examples: invalid value '0': must be a positive")
      for command in _REPORT],
    (_REPORT[0], ["OUT", "--html", "MISSING/report.html"],
     "--html 'MISSING/report.html': folder 'MISSING' does not exist"),
])
def test_a_reading_command_refuses_a_wrong_flag_before_it_loads_tensorflow(tmp_path, command, argv, named):
    """A wrong flag or value is refused at once, naming both: TensorFlow, which takes seconds
    to load, is imported only once the flags are right (``-X importtime`` lists each import)."""
    argv = [arg.replace("OUT", str(tmp_path / "out")).replace("MISSING", str(tmp_path / "missing")) for arg in argv]
    named = named.replace("MISSING", str(tmp_path / "missing"))
    done = subprocess.run([sys.executable, "-X", "importtime", *command, *argv], capture_output=True, text=True,
                          timeout=300, check=False)
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    loaded = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert done.returncode == 2 and any(named in line for line in said), done.stderr[-3000:]
    assert [name for name in loaded if name.split(".")[0] in _HEAVY] == []
    assert list(tmp_path.iterdir()) == []  # (nothing read or written)


@pytest.mark.parametrize("command", [["-m", "beam_etl.beam.prune_cache"], [str(COMMAND), "prune-cache"]])
def test_prune_cache_refuses_a_wrong_flag_before_it_loads_beam(tmp_path, command):
    """Beam (its file systems, for gs://) takes seconds to load: only once the flags are right."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command, str(tmp_path / "out"), "--bogus"],
                          capture_output=True, text=True, timeout=300, check=False)
    loaded = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr, done.stderr[-3000:]
    assert [name for name in loaded if name.split(".")[0] in ("apache_beam", *_HEAVY)] == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps", [str(2 ** 63), str(10 ** 30), "0", "-1"])
@pytest.mark.parametrize("flag", ["--steps", "--train_steps"])
def test_load_refuses_a_count_of_steps_tensorflow_cannot_hold_naming_flag_and_value(flag, steps, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["load", "--data", "o", flag, steps])
    assert exited.value.code == 2 and f"{flag}: invalid value '{steps}': must be " in capsys.readouterr().err


def test_load_takes_the_largest_count_of_steps_tensorflow_holds(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:  # (past the flags: there is no output there)
        cli.main(["load", "--data", str(tmp_path), "--steps", str(2 ** 63 - 1), "--train_steps", str(2 ** 63 - 1)])
    said = capsys.readouterr().err
    assert exited.value.code == 2 and f"--data {str(tmp_path)!r}: " in said and "steps:" not in said


def test_the_summary_speaks_of_augmentation_only_when_there_is_some():
    from beam_etl.beam import run_summary

    manifest = {"num_inputs": 10, "num_written": 9, "num_examples": 9, "num_rejected": 1,
                "splits": {"train": {"num_examples": 9, "files": ["a"], "bytes": 1}},
                "rejected": {"by_reason": {"truncated": 1}}}
    assert run_summary.summarize(manifest, 2.0).splitlines()[0] == (
        "beam-etl: 10 inputs -> 9 written, 1 rejected, in 2.0 s (5.0 images/s)")
    augmented = run_summary.summarize({**manifest, "num_examples": 27}, 2.0).splitlines()[0]
    assert "9 written (+18 augmented copies: 27 examples), 1 rejected" in augmented


def test_the_summary_says_what_came_from_the_cache_and_what_changed():
    from beam_etl.beam import run_summary

    manifest = {"num_inputs": 210, "num_written": 205, "num_examples": 205, "num_rejected": 5,
                "splits": {"train": {"num_examples": 205, "files": ["a"], "bytes": 1}},
                "rejected": {"by_reason": {"truncated": 5}},
                "changes": {"against_run": "r1", "file": "lineage/changes.jsonl", "added": 1, "removed": 0,
                            "changed": 2, "unchanged": 202},
                "statistics": {"class_names": ["b", "a", "c"]}}
    lines = run_summary.summarize(manifest, 2.0, cache={"hits": 206, "misses": 3, "damaged": 1},
                             replaced={"statistics": {"class_names": ["a", "b", "d"]}}).splitlines()
    assert "  cache: 206 outcomes taken from it, 4 computed (1 damaged entry among them)" in lines
    assert ("  against the output replaced: 1 added, 0 removed, 2 changed, 202 unchanged "
            "(the keys: lineage/changes.jsonl)") in lines
    assert lines[-1] == ("  note: the transform graph's label ids differ from the replaced output's: "
                         "b 1 -> 0, a 0 -> 1, c -1 -> 2, d 2 -> -1 (a label id is the class name's place in "
                         "the training split's vocabulary, most frequent first)")
    plain = run_summary.summarize(manifest, 2.0, cache=None, replaced={"statistics": {"class_names": ["b", "a", "c"]}})
    assert "cache:" not in plain and "note:" not in plain
    unknown = {**manifest, "changes": {"against_run": "r1", "unknown": "the output replaced has no lineage index"}}
    assert "  against the output replaced: not known: the output replaced has no lineage index" in \
        run_summary.summarize(unknown, 2.0).splitlines()


def test_the_summary_names_the_mask_values_whose_class_ids_moved():
    from beam_etl.beam import run_summary

    manifest = {"num_inputs": 3, "num_written": 3, "num_examples": 3, "num_rejected": 0,
                "splits": {"train": {"num_examples": 3, "files": ["a"], "bytes": 1}}, "rejected": {"by_reason": {}},
                "statistics": {"class_names": ["b", "a"], "class_values": [0, 1, 2, 3, 7]}}
    replaced = {"statistics": {"class_names": ["a", "b"], "class_values": [1, 2, 3, 5]}}
    lines = run_summary.summarize(manifest, 2.0, replaced=replaced).splitlines()
    assert lines[-2:] == [
        "  note: the transform graph's label ids differ from the replaced output's: b 1 -> 0, a 0 -> 1 (a label id "
        "is the class name's place in the training split's vocabulary, most frequent first)",
        "  note: the transform graph's mask class ids differ from the replaced output's: value 0 -1 -> 0, "
        "value 1 0 -> 1, value 2 1 -> 2, value 3 2 -> 3, value 7 -1 -> 4, value 5 3 -> -1 (a mask value's class id "
        "is its place in statistics.class_values, -1 where it has none)"]
    same = {"statistics": {"class_names": ["a", "b"], "class_values": [0, 1, 2, 3, 7]}}
    assert "mask class ids" not in run_summary.summarize(manifest, 2.0, replaced=same)
    unknown = {"statistics": {"class_names": ["b", "a"]}}  # (a manifest that does not say its class values)
    assert "note:" not in run_summary.summarize(manifest, 2.0, replaced=unknown)
    many = {**manifest, "statistics": {"class_names": ["b", "a"], "class_values": list(range(14))}}
    assert run_summary.summarize(many, 2.0, replaced=same).splitlines()[-1] == (
        "  note: the transform graph's mask class ids differ from the replaced output's: value 4 -1 -> 4, "
        "value 5 -1 -> 5, value 6 -1 -> 6, value 7 4 -> 7, value 8 -1 -> 8, value 9 -1 -> 9, value 10 -1 -> 10, "
        "value 11 -1 -> 11 and 2 more (a mask value's class id is its place in statistics.class_values, "
        "-1 where it has none)")


def test_a_ctrl_c_says_whether_the_rerun_reuses_what_was_finished():
    from pipelines import preprocess  # pylint: disable=import-outside-toplevel

    assert preprocess.interrupted_message(["--oxford_pets", "d", "--output", "o"]).endswith(
        "run the same command again to start over (the images it finished come from the cache).")
    assert preprocess.interrupted_message(["--oxford_pets", "d", "--output", "o", "--no_cache"]).endswith(
        "run the same command again to start over (nothing is reused: --no_cache).")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("runner", [["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
                                    ["--dask_local_workers", "2"]])
def test_a_failed_run_says_so_in_one_message_and_keeps_the_traceback_in_a_file(pets_dir, tmp_path, runner):
    failed = _run("preprocess", "--oxford_pets", str(pets_dir), "--output", str(tmp_path / "out"),
                  "--image_size", "24", "--max_reject_fraction", "0.01", *runner)
    assert failed.returncode == 1
    lines = _lines(failed.stderr)
    # progress notes, then the failure and where its traceback is: nothing else
    assert [line for line in lines if not line.endswith(" images found") and " images done" not in line] == lines[-2:]
    assert lines[-2].startswith("beam-etl: failed: ") and "above --max_reject_fraction=0.01" in lines[-2]
    path = lines[-1].split("the traceback is in ")[1].split(";")[0]
    with open(path, encoding="utf-8") as handle:
        assert "Traceback (most recent call last)" in handle.read()
    os.remove(path)  # (the user's to read and remove)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("closed, workers", [(("stdout",), []), (("stderr",), []), (("stdout", "stderr"), []),
                                             (("stdout", "stderr"), ["--direct_num_workers", "2"])])
def test_a_reader_that_went_away_fails_no_run(pets_dir, tmp_path, closed, workers):
    """``beam-etl preprocess ... | head -1``: the command's messages are for whoever reads them;
    a pipe that nobody reads any more neither fails the run nor changes what it writes."""
    from beam_etl.loader import verification  # pylint: disable=import-outside-toplevel

    ends = {}
    for name in closed:
        read_end, ends[name] = os.pipe()
        os.close(read_end)  # (gone before the command's first line)
    out = tmp_path / "out"
    try:
        ran = subprocess.run([str(COMMAND), "preprocess", "--oxford_pets", str(pets_dir), "--output", str(out),
                              "--image_size", "24", *workers], stdout=ends.get("stdout", subprocess.DEVNULL),
                             stderr=ends.get("stderr", subprocess.PIPE), timeout=300, check=False,
                             env=dict(os.environ, TMPDIR=str(tmp_path)))
    finally:
        for end in ends.values():
            os.close(end)
    assert ran.returncode == 0, ran.stderr
    said = (ran.stderr or b"").decode()
    assert "failed" not in said and "Traceback" not in said and "Broken pipe" not in said, said
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("beam-etl-preprocess-")]  # (no failure's log)
    assert verification.verify(str(out)) == {}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_written"] + manifest["num_rejected"] == manifest["num_inputs"] > 20


@pytest.mark.slow
@pytest.mark.parametrize("module", ["beam_etl.diff", "beam_etl.loader.verify"])
def test_a_module_run_with_python_m_into_a_closed_pipe_ends_as_it_would(raw_output, tmp_path, module):
    """``python -m beam_etl.diff OLD NEW | head``: the module forms the README names alike."""
    out, _ = raw_output
    read_end, write_end = os.pipe()
    os.close(read_end)
    argv = [str(out), str(out)] if module == "beam_etl.diff" else [str(out)]
    try:
        ran = subprocess.run([sys.executable, "-m", module, *argv], stdout=write_end, stderr=subprocess.PIPE,
                             timeout=300, check=False, env=dict(os.environ, TMPDIR=str(tmp_path)))
    finally:
        os.close(write_end)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert b"Traceback" not in ran.stderr and b"Broken pipe" not in ran.stderr


@pytest.mark.slow
def test_verbose_shows_the_traceback_and_the_logs(pets_dir, tmp_path):
    failed = _run("preprocess", "--oxford_pets", str(pets_dir), "--output", str(tmp_path / "out"),
                  "--image_size", "24", "--max_reject_fraction", "0.01", "--verbose")
    assert failed.returncode == 1
    assert "Traceback (most recent call last)" in failed.stderr and "beam-etl: failed" not in failed.stderr


@pytest.mark.slow
def test_the_loader_prints_no_tensorflow_chatter(raw_output):
    out, _ = raw_output
    loaded = _run("load", "--data", str(out), "--split", "train", "--batch_size", "2", "--steps", "3")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr == "" and "images_per_s=" in loaded.stdout  # no \r either: stderr is no terminal
    verbose = _run("load", "--data", str(out), "--split", "train", "--batch_size", "2", "--steps", "3", "--verbose")
    assert "cuda" in verbose.stderr.lower() or "oneDNN" in verbose.stderr  # what the filter keeps away
    as_module = subprocess.run([sys.executable, "-m", "beam_etl.loader.verify", str(out)], capture_output=True,
                               text=True, timeout=300)
    assert as_module.returncode == 0 and as_module.stderr == "" and "every file matches" in as_module.stdout


def test_a_file_uri_is_the_local_place_it_names(tmp_path):
    """``file://OUT`` and ``OUT`` are one folder: what lies in one lies in the other, and a
    report is not written into either."""
    from beam_etl.loader import written_file
    from beam_etl.output_layout import is_local, is_within, local_path

    out = tmp_path / "out"
    out.mkdir()
    assert is_local(f"file://{out}") and local_path(f"file://{out}") == str(out) and not is_local("gs://b/o")
    assert is_within(f"file://{out}/a.html", str(out)) and is_within(f"{out}/a.html", f"file://{out}")
    assert not is_within(f"file://{tmp_path}/a.html", str(out)) and not is_within(f"gs:/{out}/a", str(out))
    assert "is inside OUT" in written_file.refusal("--html", f"file://{out}/r.html", str(out))
    assert "does not exist" in written_file.refusal("--html", f"file://{tmp_path}/none/r.html", str(out))


def test_no_step_of_the_job_makes_beam_warn_of_a_process_that_yields_and_returns():
    """Beam reads each DoFn's ``process`` as text and warns (on the command's stderr, among its
    own messages) of one with both ``yield`` and ``return ...`` lines: a trailing comment on a
    bare ``return`` is enough."""
    import apache_beam as beam
    from apache_beam.transforms import core

    from beam_etl.beam import preprocess  # (every step of the job)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    assert preprocess.Preprocess
    steps = [cls for cls in subclasses(beam.DoFn) if cls.__module__.startswith("beam_etl.")]
    warned = core._check_fn_use_yield_and_return  # pylint: disable=protected-access
    assert len(steps) >= 6 and [cls.__name__ for cls in steps if warned(cls.process)] == []
