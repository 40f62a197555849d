import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dockerfile_uses_the_pinned_beam_version():
    pin = re.search(r'"apache-beam\[gcp\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"ARG BEAM_VERSION=([\d.]+)", dockerfile).group(1) == pin
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in dockerfile


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in readme
    assert "bash scripts/setup.sh\n.venv/bin/python -m pytest\n" in ci


def test_flex_template_launches_the_job_with_flags_it_knows():
    import json

    from beam_etl.beam import options as options_lib

    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    py_file = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beam-etl/(\S+)", dockerfile).group(1)
    assert (ROOT / py_file).is_file()
    assert "python_template_launcher" in dockerfile and "pip check" in dockerfile
    parameters = json.loads((ROOT / "docker" / "metadata.json").read_text())["parameters"]
    known = {action.dest for action in options_lib._parser(None, None)._actions}  # pylint: disable=protected-access
    assert {p["name"] for p in parameters} <= known
    assert [p["name"] for p in parameters if not p["isOptional"]] == ["output"]
