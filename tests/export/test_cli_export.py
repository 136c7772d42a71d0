"""`hybridize export` through typer's CliRunner on a real (small) saved hybrid."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from hybridize.errors import HybridizeError

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoint(hybrid_checkpoint):
    return hybrid_checkpoint


def _app():
    from hybridize_cli.main import app

    return app


@pytest.mark.slow
def test_export_onnx_cli(checkpoint, tmp_path):
    out = tmp_path / "r10.onnx"
    result = CliRunner().invoke(
        _app(), ["export", str(checkpoint), "--format", "onnx", "-o", str(out), "--no-real"]
    )
    assert result.exit_code == 0, result.output
    assert "[PASS]" in result.output and "top-1 agreement: 1.0000" in result.output
    assert out.is_file()


def test_export_pt2_cli_static_batch(parallel_hybrid, tmp_path, monkeypatch):
    """The CLI path for pt2, on the small hand-built hybrid standing in for a loaded checkpoint
    (a real checkpoint's pt2 round trip costs ~30 s of torch.export time on this CPU)."""
    import hybridize

    parallel_hybrid.hybridize_meta = {"example_shape": [1, 3, 16, 16]}
    monkeypatch.setattr(hybridize, "load", lambda path: parallel_hybrid)
    out = tmp_path / "m.pt2"
    args = ["export", "m.safetensors", "-f", "pt2", "-o", str(out), "--batch-size", "3"]
    result = CliRunner().invoke(_app(), [*args, "--no-real", "--img-size", "12"])
    assert result.exit_code == 0, result.output
    assert "pt2 export" in result.output and "[PASS]" in result.output
    program = torch.export.load(str(out))
    assert tuple(program.example_inputs[0][0].shape) == (3, 3, 12, 12)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite"], "not supported"),
        (["--format", "onnx", "--batch-size", "2", "--dynamic-batch"], "exclude each other"),
    ],
)
def test_export_cli_user_errors(tmp_path, args, message):
    result = CliRunner().invoke(_app(), ["export", str(tmp_path / "none.safetensors"), *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, HybridizeError) and message in str(result.exception)
