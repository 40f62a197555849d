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
    assert set(cli.COMMANDS) == {"preprocess", "load", "verify", "sample-data"}


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
