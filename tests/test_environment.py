"""environment.yml and pyproject.toml name the same dependencies."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_parses_and_matches_pyproject():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert environment["name"] == "bclib"
    conda = [item for item in environment["dependencies"] if isinstance(item, str)]
    assert any(item.startswith("python=3.11") for item in conda)
    assert "pip" in conda
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert "-e .[dev]" in pip_section
    environment_names = {_name(item) for item in pip_section if not item.startswith("-e")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project_names = {_name(item) for item in pyproject["project"]["dependencies"]}
    assert environment_names == project_names


def test_pyproject_declares_console_command_and_dev_extra():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["bclib"] == "bclib.run.cli:main"
    dev = {_name(item) for item in pyproject["project"]["optional-dependencies"]["dev"]}
    assert {"pytest", "pytest-timeout", "pytest-xdist"} <= dev
    required = {"tensorflow", "keras", "jupyterlab", "ipykernel", "ipywidgets", "papermill", "seaborn",
                "scikit-learn", "pandas", "pillow", "tqdm"}
    assert required <= {_name(item) for item in pyproject["project"]["dependencies"]}


def test_readme_starts_with_the_two_setup_commands():
    lines = (ROOT / "README.md").read_text().splitlines()[:8]
    text = "\n".join(lines)
    assert "make run" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
