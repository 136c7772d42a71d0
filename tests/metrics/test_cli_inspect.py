"""`hybridize inspect` through typer's CliRunner on a real (small) saved hybrid."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def checkpoint(hybrid_checkpoint):
    return hybrid_checkpoint


@pytest.mark.slow
def test_inspect_cli_writes_everything(checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    from hybridize_cli.main import app

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"epoch": 0, "train_loss": 1.0, "eval_top1": 0.5}) + "\n")
    args = ["inspect", str(checkpoint), "--data", "random", "--batches", "2", "--batch-size", "2"]
    args += ["--json", str(tmp_path / "r.json"), "--plots", str(tmp_path / "plots")]
    args += ["--metrics", str(metrics), "--graph", str(tmp_path / "g.html")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "spiking regions" in result.output and "layer1.0" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["n_samples"] == 4 and data["inputs"] == "random"
    assert "random inputs" in result.output  # the rates are read next to that warning
    names = {r["name"] for r in data["regions"]}
    assert {"layer1.0", "layer4.0"} <= names
    assert all(r["twin_dense_macs"] > 0 for r in data["regions"])
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert pngs == ["energy.png", "firing_rates.png", "raster.png", "training_curves.png"]
    assert "FusionBlock" in (tmp_path / "g.html").read_text()


def test_inspect_cli_missing_checkpoint(tmp_path):
    from hybridize.errors import HybridizeError
    from hybridize_cli.main import app

    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "none.safetensors")])
    assert result.exit_code != 0 and isinstance(result.exception, HybridizeError)


def test_inspect_cli_metrics_needs_plots(tmp_path):
    from hybridize.errors import HybridizeError
    from hybridize_cli.main import app

    args = ["inspect", str(tmp_path / "c.safetensors"), "--metrics", str(tmp_path / "m.jsonl")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, HybridizeError) and "--plots" in str(result.exception)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--graph", "g.png", "unknown picture format '.png'"),
        ("--json", "missing/r.json", "folder missing does not exist"),
        ("--plots", "a-file", "is a file; give a folder"),
        ("--metrics", "none.jsonl", "no such file"),
    ],
)
def test_inspect_cli_checks_its_outputs_before_measuring(
    tmp_path, monkeypatch, option, value, expected
):
    import hybridize
    from hybridize.errors import HybridizeError
    from hybridize_cli.main import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    loaded = []
    monkeypatch.setattr(hybridize, "load", lambda *a, **k: loaded.append(a))
    args = ["inspect", "c.safetensors", option, value]
    if option == "--metrics":
        args += ["--plots", "plots"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, HybridizeError)
    assert expected in str(result.exception) and loaded == []  # refused before the load
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
