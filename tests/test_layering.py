"""The import contract of pyproject.toml ([tool.importlinter]) holds, and matches the layers
docs/architecture.md describes."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return contract["layers"]


def test_import_contracts_are_kept(monkeypatch):
    cli = pytest.importorskip("importlinter.cli")
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(no_cache=True, no_logo=True) == cli.EXIT_STATUS_SUCCESS


def test_architecture_doc_lists_the_contract_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```\n(hybridize layers, top to bottom.*?)```", text, re.S)
    assert block, "docs/architecture.md lost its layer listing"
    documented = [line.split("#")[0].strip() for line in block.group(1).splitlines()[1:]]
    assert [line for line in documented if line] == _layers()


def test_building_a_network_loads_no_conversion_code():
    """nets and conversion are independent at run time too (no import hidden from the linter)."""
    code = (
        "import sys\n"
        "from hybridize.nets import BuildRequest\n"
        "from hybridize.nets.factory import create\n"
        "create(BuildRequest('has8_resnet_b32', kwargs={'hybrid': False}))\n"
        "create(BuildRequest('timm:test_resnet', num_classes=3))\n"
        "assert not [m for m in sys.modules if m.startswith('hybridize.conversion')], 'loaded'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
