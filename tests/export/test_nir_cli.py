"""`hybridize export --format nir`: a real checkpoint end to end, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("nir", reason="the nir extra is not installed")


def _small_hybrid() -> nn.Module:
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    torch.manual_seed(0)
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), LIF(time_steps=8))
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=8), BitPlaneDecoder(bits=8))
    model = nn.Sequential(FusionBlock(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), branch))
    model.hybridize_meta = {"example_shape": [1, 3, 8, 8]}
    return model.eval()


def _run_cli(monkeypatch, capsys, model: nn.Module, *args: str) -> tuple[int, str]:
    """The console entry point in process (its error handling included) on ``model``."""
    import hybridize
    from hybridize_cli.main import run

    monkeypatch.setattr(hybridize, "load", lambda path: model)
    monkeypatch.setattr(sys, "argv", ["hybridize", "export", "m.safetensors", *args])
    with pytest.raises(SystemExit) as info:
        run()
    return info.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_cli_exports_a_checkpoint(hybrid_checkpoint, tmp_path):
    out = tmp_path / "nir"
    result = subprocess.run(
        [sys.executable, "-m", "hybridize_cli", "export", str(hybrid_checkpoint)]
        + ["--format", "nir", "-o", str(out), "--no-check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "nir export" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    regions = manifest["regions"]
    exported = [r for r in regions if r["status"] == "exported"]
    assert len(exported) >= 4  # resnet10t at 16 px: layer4's avg_down pool has a partial window
    assert all(r["reason"] for r in regions if r["status"] != "exported")
    for r in exported:
        assert (out / r["file"]).is_file() and r["encoder"]["bits"] == 8
    assert "not exported" in result.stdout or len(exported) == len(regions)
    if manifest["onnx"]["file"]:
        assert (out / manifest["onnx"]["file"]).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nir"]


def test_cli_output_that_is_a_file_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep")
    code, err = _run_cli(monkeypatch, capsys, _small_hybrid(), "-f", "nir", "-o", str(target))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "is a file" in lines[0]
    assert target.read_text() == "keep" and [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_cli_checkpoint_without_twins_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    plain = nn.Sequential(nn.Conv2d(3, 4, 3))
    out = tmp_path / "out"
    code, err = _run_cli(monkeypatch, capsys, plain, "-f", "nir", "-o", str(out), "--no-check")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "no spiking twin" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_cli_exports_again_into_its_folder(monkeypatch, capsys, tmp_path):
    out = tmp_path / "nir"
    for _ in range(2):  # the second run rewrites the first run's export
        code, err = _run_cli(monkeypatch, capsys, _small_hybrid(), "-f", "nir", "-o", str(out))
        assert code == 0, err
    assert (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["nir"]
