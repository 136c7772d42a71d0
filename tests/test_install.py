"""The CLI as users install it: a built wheel (no extras) in a fresh virtual environment.

The fresh environment borrows the already installed dependencies (torch, timm...) through a
``.pth`` line naming this interpreter's site-packages folders, so nothing is downloaded; the
``hybridize`` code itself comes only from the wheel.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _site_folders() -> list[str]:
    """This interpreter's site-packages folders (never the repository itself)."""
    found = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    found += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    out: list[str] = []
    for p in found:
        if p and Path(p).is_dir() and p not in out and Path(p).resolve() != ROOT:
            out.append(p)
    return out


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(bin folder, environment) of a fresh venv holding the wheel built from this tree."""
    if importlib.util.find_spec("setuptools") is None:  # listed in scripts/requirements.txt
        pytest.fail("building the wheel needs setuptools: pip install 'setuptools>=70.1'")
    tmp = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip"]
    source = tmp / "source"  # setuptools writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("hybridize", "cli", "recipes"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(source)],
        tmp,
        env,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp.glob("hybridize-*.whl"))
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp, env).stdout.strip()  # fmt: skip
    Path(purelib, "_borrowed_dependencies.pth").write_text("\n".join(_site_folders()) + "\n")
    done = _run([*pip, "--python", str(py), "install", "--no-deps", "-q", str(wheel)], tmp, env)
    assert done.returncode == 0, done.stderr
    return venv / "bin", env


@pytest.mark.slow
def test_installed_cli_runs_from_the_wheel(installed, tmp_path):
    bindir, env = installed
    where = _run(
        [str(bindir / "python"), "-c", "import hybridize, hybridize_cli; "
         "print(hybridize.__file__); print(hybridize_cli.__file__)"],
        tmp_path, env,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(bindir.parent), line  # the wheel, not the checkout

    version = _run([str(bindir / "hybridize"), "--version"], tmp_path, env)
    assert version.returncode == 0 and version.stdout.startswith("hybridize "), version.stderr

    listed = _run([str(bindir / "hybridize"), "recipes", "list"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    assert "has8-finetune" in listed.stdout  # the built-in YAML recipes are package data

    bad = _run([str(bindir / "hybridize"), "convert", "resnet10t", "--recipe", "nope"],
               tmp_path, env)  # fmt: skip
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert lines[0].startswith("error: unknown recipe 'nope'")

    usage = _run([str(bindir / "hybridize"), "convert", "--bogus"], tmp_path, env)
    assert usage.returncode == 2 and "--bogus" in usage.stderr
