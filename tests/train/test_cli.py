"""The finetune / evaluate commands end to end on a tiny converted timm model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import hybridize
from hybridize.data.datasets import DEBIAN_FASHION

pytestmark = pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Fashion-MNIST not installed")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = hybridize.create_model("timm:test_efficientnet", num_classes=10)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=torch.zeros(1, 3, 16, 16))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    hybridize.save(hybrid, path)
    return path


def test_finetune_then_evaluate(checkpoint: Path, tmp_path: Path) -> None:
    from hybridize_cli.main import app

    runner = CliRunner()
    out = tmp_path / "run"
    args = [
        "finetune", str(checkpoint), "--data", "fashion-mnist", "--img-size", "16",
        "--batch-size", "8", "--limit-train-batches", "2", "--limit-eval", "16",
        "--workers", "0", "--out", str(out), "--device", "cpu",
    ]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "last.safetensors").is_file() and (out / "last.state.pt").is_file()
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_samples"] == 16 and record["eval_samples"] == 16
    assert len(record["gates"]) > 0  # the converted model's FusionBlocks were found
    # the written checkpoint is a hybrid that hybridize.load rebuilds
    reloaded = hybridize.load(out / "last.safetensors")
    assert any(isinstance(m, hybridize.spiking.FusionBlock) for m in reloaded.modules())
    ev = runner.invoke(
        app,
        ["evaluate", str(out / "last.safetensors"), "--img-size", "16", "--limit", "16",
         "--workers", "0", "--json", "--device", "cpu"],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    figures = json.loads(ev.output.strip().splitlines()[-1])
    assert figures["eval_samples"] == 16
    assert figures["eval_top1"] == pytest.approx(record["eval_top1"])


def test_bad_option_is_a_one_line_error(checkpoint: Path, tmp_path: Path) -> None:
    from hybridize.errors import HybridizeError
    from hybridize_cli.main import app

    res = CliRunner().invoke(
        app, ["finetune", str(checkpoint), "--optimizer", "lamb", "--out", str(tmp_path)]
    )
    assert isinstance(res.exception, HybridizeError) and "adamw|adam|sgd" in str(res.exception)
