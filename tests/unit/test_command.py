"""``beam-etl``: the console command installed with the package, and its subcommands."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from pipelines import cli

COMMAND = pathlib.Path(sys.executable).parent / "beam-etl"


def _run(*args):
    return subprocess.run([str(COMMAND), *args], capture_output=True, text=True, timeout=300)


def test_the_installed_command_lists_its_subcommands():
    result = _run("--help")
    assert result.returncode == 0
    for name, (module, _, _) in cli.COMMANDS.items():
        assert f"  {name}" in result.stdout and f"python -m {module}" in result.stdout
    assert set(cli.COMMANDS) == {"preprocess", "load", "verify", "diff", "sample-data"}


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_subcommand_has_help_under_its_own_name(name, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([name, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: beam-etl {name} ")


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


def test_the_summary_speaks_of_augmentation_only_when_there_is_some():
    from beam_etl.beam import launch

    manifest = {"num_inputs": 10, "num_written": 9, "num_examples": 9, "num_rejected": 1,
                "splits": {"train": {"num_examples": 9, "files": ["a"], "bytes": 1}},
                "rejected": {"by_reason": {"truncated": 1}}}
    assert launch.summarize(manifest, 2.0).splitlines()[0] == (
        "beam-etl: 10 inputs -> 9 written, 1 rejected, in 2.0 s (5.0 images/s)")
    augmented = launch.summarize({**manifest, "num_examples": 27}, 2.0).splitlines()[0]
    assert "9 written (+18 augmented copies: 27 examples), 1 rejected" in augmented
