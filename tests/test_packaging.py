"""pyproject lists every package (the list is explicit because of the remapped folders)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMAPPED = {"cli": "hybridize_cli", "recipes": "hybridize.builtin_recipes"}


def _package_name(folder: Path) -> str:
    rel = folder.relative_to(ROOT).parts
    head = REMAPPED.get(rel[0], rel[0])
    return ".".join([head, *rel[1:]])


def test_every_package_folder_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        _package_name(init.parent)
        for top in ("hybridize", "cli", "recipes")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == listed
    for name, folder in REMAPPED.items():
        assert config["package-dir"][folder] == name


def test_console_script_and_cli_import():
    from typer.testing import CliRunner

    from hybridize_cli.main import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("hybridize ")
