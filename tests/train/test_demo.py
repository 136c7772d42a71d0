"""The demo experiment in the library (hybridize.run_demo) and the CLI that prints it, on a
tiny timm model and a few Fashion-MNIST images."""

from __future__ import annotations

import json

import pytest

import hybridize
from hybridize.data.datasets import DEBIAN_FASHION
from hybridize.train import TrainError, read_metrics
from hybridize.train.demo import DEMO, FULL, demo_sizes

needs_data = pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Fashion-MNIST not installed")
TINY = dict(img_size=16, batch_size=8, limit_train=16, limit_eval=16, epochs=1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return hybridize.run_demo(
        out, model="timm:test_efficientnet", pretrained=False, device="cpu", workers=0,
        progress=False, **TINY,
    )  # fmt: skip


def test_sizes_take_the_given_values_over_the_preset() -> None:
    assert demo_sizes() == DEMO and demo_sizes(full=True) == FULL
    assert demo_sizes(epochs=2, img_size=None) == {**DEMO, "epochs": 2}
    with pytest.raises(TrainError, match="unknown demo option 'epoch'"):
        demo_sizes(epoch=2)


@needs_data
def test_demo_rows_are_the_runs_last_epochs(demo) -> None:
    out = demo.out
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(demo.to_dict()))
    assert demo.settings == {"model": "timm:test_efficientnet", "recipe": "has8-finetune", **TINY}
    for tag, row in (("ann", demo.ann), ("hybrid", demo.hybrid)):
        (last,) = read_metrics(out / tag)
        assert (row.top1, row.top5, row.eval_loss) == (
            last["eval_top1"], last["eval_top5"], last["eval_loss"],
        )  # fmt: skip
        assert last["train_samples"] == 16 and row.checkpoint == str(out / tag / "last.safetensors")
    plain = hybridize.create_model("timm:test_efficientnet", num_classes=10)
    assert demo.ann.params == sum(p.numel() for p in plain.parameters())
    assert demo.hybrid.params > demo.ann.params  # the twins and gates come on top
    assert demo.ann.firing_rate is None and demo.ann.gate_mean is None
    assert 0 <= demo.hybrid.firing_rate <= 1 and demo.hybrid.gate_mean is not None
    # the hybrid's figures are those of its checkpoint, evaluated again
    again = hybridize.evaluate(
        demo.hybrid.checkpoint, img_size=16, limit=16, workers=0, device="cpu", batch_size=8
    )
    assert again["eval_top1"] == pytest.approx(demo.hybrid.top1)


@needs_data
def test_cli_prints_the_library_result(demo, capsys, monkeypatch, tmp_path) -> None:
    from hybridize_cli.main import main_entry

    calls = []

    def run_demo(out, **kwargs):
        calls.append((out, kwargs))
        return demo

    monkeypatch.setattr(hybridize, "run_demo", run_demo)
    code = main_entry(["demo", "--out", str(tmp_path / "d"), "--epochs", "2", "--device", "cpu"])
    assert code == 0
    ((out, kwargs),) = calls
    assert out == tmp_path / "d" and kwargs["epochs"] == 2 and kwargs["img_size"] is None
    text = capsys.readouterr().out
    assert f"{100 * demo.ann.top1:.2f}%" in text and f"{100 * demo.hybrid.top1:.2f}%" in text
