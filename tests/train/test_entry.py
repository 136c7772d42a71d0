"""The way into a run: one config object plus overrides, a progress callback, no rich, and
train/ modules that import each other without cycles."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
import types
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from hybridize.train import FinetuneConfig, TrainError, finetune, read_metrics, resolve_config

from .conftest import COMMON, make_hybrid

TRAIN = Path(__file__).resolve().parents[2] / "hybridize" / "train"


@pytest.mark.parametrize(
    "key, closest", [("lrr", "lr"), ("epoch", "epochs"), ("batchsize", "batch_size")]
)
def test_unknown_override_names_the_closest_option(key, closest, data) -> None:
    with pytest.raises(TrainError) as exc:
        finetune(make_hybrid(), data, **{**COMMON, key: 1})
    message = str(exc.value)
    assert "\n" not in message
    assert message == f"unknown fine-tuning option {key!r}: did you mean {closest!r}?"


def test_overrides_beat_the_config_and_a_preset_beats_the_config() -> None:
    config = FinetuneConfig(epochs=4, lr=0.5, optimizer="sgd")
    cfg = resolve_config(base=config, lr=0.25)
    assert (cfg.epochs, cfg.lr, cfg.optimizer) == (4, 0.25, "sgd")
    cfg = resolve_config("has8-small", base=config, lr=0.25)
    # the preset sets optimizer and batch size over the config; lr stays the override's
    assert (cfg.epochs, cfg.optimizer, cfg.batch_size, cfg.lr) == (4, "adam", 16, 0.25)
    with pytest.raises(TrainError, match="invalid fine-tuning option: lr -1"):
        resolve_config(base=config, lr=-1.0)


class Recorder:
    """A ProgressCallback that keeps every call."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def note(self, text: str) -> None:
        self.calls.append(("note", text))

    def epoch_start(self, description: str, steps: int) -> None:
        self.calls.append(("start", description, steps))

    def step(self, loss: float) -> None:
        self.calls.append(("step", loss))

    def epoch_end(self, record: dict, summary: str) -> None:
        self.calls.append(("end", record, summary))


def test_config_object_and_callback_drive_a_run(tmp_path: Path, data) -> None:
    config = FinetuneConfig(epochs=2, batch_size=8, lr=1e-2, workers=0)
    recorder = Recorder()
    result = finetune(
        make_hybrid(), data, config, out=tmp_path, progress=recorder, device="cpu", tag="t"
    )
    assert result.config == config
    kinds = [c[0] for c in recorder.calls]
    assert kinds == (["start"] + ["step"] * 6 + ["end"]) * 2  # 48 images, batch 8
    assert recorder.calls[0] == ("start", "t 1/2", 6)
    ends = [c for c in recorder.calls if c[0] == "end"]
    # the records are the metrics.jsonl lines; the step losses average to the epoch's loss
    assert json.loads(json.dumps([e[1] for e in ends])) == read_metrics(tmp_path)
    losses = [c[1] for c in recorder.calls if c[0] == "step"]
    for epoch, (_, record, summary) in enumerate(ends):
        mean = sum(losses[6 * epoch : 6 * epoch + 6]) / 6
        assert math.isclose(mean, record["train_loss"], rel_tol=1e-6)
        assert summary.startswith(f"t epoch {epoch + 1}/2: train loss {record['train_loss']:.4f}")


def test_a_frozen_ann_is_trainable_again_after_the_run(tmp_path: Path, data) -> None:
    """``ann_lr_scale=0`` freezes the ANN for its run only: a second stage trains it."""
    model = make_hybrid()
    ann = [p for name, p in model.named_parameters() if ".ann." in f".{name}"]
    assert ann
    first = [p.detach().clone() for p in ann]
    finetune(model, data, epochs=1, ann_lr_scale=0.0, out=tmp_path / "a", **COMMON)
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(first, ann, strict=True))  # frozen: unchanged
    finetune(model, data, epochs=1, ann_lr_scale=1.0, out=tmp_path / "b", **COMMON)
    assert any(not torch.equal(a, p) for a, p in zip(first, ann, strict=True))


def test_the_library_does_not_import_rich() -> None:
    code = (
        "import sys, hybridize.train, hybridize.train.demo, hybridize.train.loop; "
        "print('rich' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imports(path: Path) -> set[str]:
    """The hybridize.train modules ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return {n for n in names if (TRAIN / f"{n.removeprefix('hybridize.train.')}.py").is_file()
            and n.startswith("hybridize.train.")}  # fmt: skip


def test_train_modules_import_without_cycles() -> None:
    graph = {f"hybridize.train.{p.stem}": _imports(p) for p in TRAIN.glob("*.py")}
    graph.pop("hybridize.train.__init__")
    assert "hybridize.train.loop" not in graph["hybridize.train.evaluate"]
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in graph.get(node, ()):
            visit(nxt, (*path, node))
        done.add(node)

    for module in graph:
        visit(module, ())


def test_cli_passes_exactly_the_options_it_was_given(monkeypatch, tmp_path: Path) -> None:
    import hybridize
    from hybridize_cli.main import main_entry

    calls = []

    def fake(checkpoint, data, **kwargs):
        calls.append(kwargs)
        return types.SimpleNamespace(best_top1=None, last=None, best=None)

    monkeypatch.setattr(hybridize, "finetune", fake)
    argv = ["finetune", "x.safetensors", "--epochs", "2", "--no-augment", "--compile",
            "--paper-inputs", "--preset", "has8-small", "--out", str(tmp_path)]  # fmt: skip
    assert main_entry(argv) == 0
    (kwargs,) = calls
    given = {k: v for k, v in kwargs.items() if k in {f.name for f in fields(FinetuneConfig)}}
    assert given == {
        "epochs": 2, "augment": False, "compile": True, "paper_inputs": True,
        "preset": "has8-small",
    }  # fmt: skip
    assert kwargs["out"] == tmp_path and kwargs["resume"] is False
