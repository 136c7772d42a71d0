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


@pytest.fixture
def loaded_hybrid(parallel_hybrid, monkeypatch):
    """The small hand-built hybrid as what ``hybridize.load`` returns for any checkpoint path."""
    import hybridize

    parallel_hybrid.hybridize_meta = {"example_shape": [1, 3, 16, 16]}
    monkeypatch.setattr(hybridize, "load", lambda path: parallel_hybrid)
    return parallel_hybrid


@pytest.mark.slow
def test_export_onnx_cli(checkpoint, tmp_path):
    out = tmp_path / "r10.onnx"
    result = CliRunner().invoke(
        _app(), ["export", str(checkpoint), "--format", "onnx", "-o", str(out), "--no-real"]
    )
    assert result.exit_code == 0, result.output
    assert "[PASS]" in result.output and "top-1 agreement: 1.0000" in result.output
    assert out.is_file()


def test_export_pt2_cli_static_batch(loaded_hybrid, tmp_path):
    """The CLI path for pt2, on the small hand-built hybrid standing in for a loaded checkpoint
    (a real checkpoint's pt2 round trip costs ~30 s of torch.export time on this CPU)."""
    out = tmp_path / "m.pt2"
    args = ["export", "m.safetensors", "-f", "pt2", "-o", str(out), "--batch-size", "3"]
    result = CliRunner().invoke(_app(), [*args, "--no-real", "--img-size", "12"])
    assert result.exit_code == 0, result.output
    assert "pt2 export" in result.output and "[PASS]" in result.output
    program = torch.export.load(str(out))
    assert tuple(program.example_inputs[0][0].shape) == (3, 3, 12, 12)


def test_export_onnx_cli_exporter_option(loaded_hybrid, tmp_path):
    """--exporter reaches export_onnx and the report names the exporter that wrote the file."""
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    out = tmp_path / "m.onnx"
    args = ["export", "m.safetensors", "-f", "onnx", "-o", str(out), "--no-real"]
    result = CliRunner().invoke(_app(), [*args, "--exporter", "dynamo"])
    assert result.exit_code == 0, result.output
    assert "(torch's dynamo exporter, opset 18) [PASS]" in result.output and out.is_file()
    result = CliRunner().invoke(_app(), [*args, "--exporter", "jit"])
    assert isinstance(result.exception, HybridizeError) and result.exit_code != 0
    assert "--exporter 'jit' is not one of auto, torchscript, dynamo" in str(result.exception)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tflite"], "not supported"),
        (["--format", "onnx", "--max-flip-fraction", "2"], "--max-flip-fraction 2"),
        (["--format", "nir", "--opset", "18"], "--opset: not used by --format nir"),
        (["-f", "pt2", "--exporter", "dynamo", "--max-flip-fraction", "0.1"], "leave them out"),
    ],
)
def test_export_cli_user_errors(tmp_path, args, message):
    result = CliRunner().invoke(_app(), ["export", str(tmp_path / "none.safetensors"), *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, HybridizeError) and message in str(result.exception)


def test_export_cli_has_no_dynamic_batch_flag(tmp_path):
    """The batch axis is dynamic unless --batch-size is given, so there is no flag to ask for it."""
    from hybridize_cli.main import main_entry

    args = ["export", str(tmp_path / "none.safetensors"), "-f", "onnx", "--dynamic-batch"]
    assert main_entry(args) == 2


def test_export_pt2_cli_dynamic_batch_by_default(loaded_hybrid, tmp_path):
    """Without --batch-size the CLI exports a batch of 2 with a dynamic batch axis: the reloaded
    program runs a batch of 5 and matches eager."""
    out = tmp_path / "m.pt2"
    args = ["export", "m.safetensors", "-f", "pt2", "-o", str(out), "--no-real"]
    result = CliRunner().invoke(_app(), [*args, "--img-size", "12"])
    assert result.exit_code == 0, result.output
    assert "[PASS]" in result.output
    program = torch.export.load(str(out))
    assert tuple(program.example_inputs[0][0].shape) == (2, 3, 12, 12)
    x = torch.rand(5, 3, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), loaded_hybrid(x), atol=1e-5, rtol=1e-4)


def test_export_cli_passes_the_allowed_flip_fraction(loaded_hybrid, tmp_path):
    """--max-flip-fraction reaches the check and the report prints it."""
    args = ["export", "m.safetensors", "-f", "onnx", "-o", str(tmp_path / "m.onnx"), "--no-real"]
    result = CliRunner().invoke(_app(), [*args, "--img-size", "12", "--max-flip-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    assert "allowed fraction 0.25" in result.output
