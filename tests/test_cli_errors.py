"""User errors: one line and exit code 2; --debug shows the traceback."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hybridize_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_user_error_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "missing.safetensors"
    result = _run("evaluate", str(missing), "--data", "fashion-mnist")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = _run("--debug", "evaluate", str(tmp_path / "missing.safetensors"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "CheckpointError" in result.stderr


def test_version_and_help():
    assert _run("--version").stdout.startswith("hybridize ")
    help_text = _run("--help").stdout
    for command in ("convert", "finetune", "evaluate", "demo", "inspect", "export", "recipes"):
        assert command in help_text
