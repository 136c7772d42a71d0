"""Issue 14, item 8: a non-finite epoch stops the run, writes nothing non-finite, and the message
names the last good checkpoint only when one exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hybridize.train import TrainError, finetune, read_metrics
from hybridize.train.state import load_state

from .conftest import COMMON, make_hybrid

STEPS = 6  # 48 images, batch 8


def _written_finite(out: Path) -> None:
    for f in out.glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(f).values()), f
    for f in out.glob("*.state.pt"):
        assert all(torch.isfinite(t).all() for t in load_state(f)["model"].values()), f
    for r in read_metrics(out):  # no epoch with a null (non-finite) loss was recorded
        assert r["train_loss"] is not None and r["eval_loss"] is not None


def _on_call(model: nn.Module, call: int, action, training: bool = True) -> None:
    """Run ``action(module, output)`` after the ``call``-th forward in the given mode."""
    calls = [0]

    def hook(module: nn.Module, args, output):
        if module.training == training:
            calls[0] += 1
            if calls[0] >= call:
                return action(module, output)
        return None

    model.register_forward_hook(hook)


def test_huge_sgd_lr_never_writes_non_finite_tensors(tmp_path: Path, data) -> None:
    # finetune ... --epochs 3 --lr 1e6 --optimizer sgd (issue 14)
    options = {**COMMON, "lr": 1e6}
    with pytest.raises(TrainError, match="non-finite") as exc:
        finetune(make_hybrid(), data, epochs=3, optimizer="sgd", out=tmp_path, **options)
    message = str(exc.value)
    assert "\n" not in message
    _written_finite(tmp_path)
    if (tmp_path / "last.safetensors").exists():
        assert str(tmp_path / "last.safetensors") in message
    else:
        assert "no checkpoint was written" in message and "safetensors" not in message


def test_weights_poisoned_by_the_last_step_stop_before_the_checkpoint(tmp_path: Path, data) -> None:
    """Every step's loss is finite, but the last step of epoch 2 leaves a NaN in the state."""
    model = make_hybrid()
    model.register_buffer("counter", torch.zeros(1))  # saved with the weights, unused by autograd

    def poison(module: nn.Module, output: torch.Tensor) -> None:
        module.counter.fill_(float("nan"))

    _on_call(model, 2 * STEPS, poison)
    with pytest.raises(TrainError, match="non-finite weights in epoch 2") as exc:
        finetune(model, data, epochs=3, out=tmp_path, **COMMON)
    assert f"{tmp_path / 'last.safetensors'} (epoch 1)" in str(exc.value)
    assert load_state(tmp_path / "last.state.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    _written_finite(tmp_path)


def test_non_finite_eval_loss_stops_the_run(tmp_path: Path, data) -> None:
    """Finite weights, but the evaluation of epoch 2 overflows: the epoch is not recorded."""
    model = make_hybrid()
    _on_call(model, 4, lambda m, out: out * float("inf"), training=False)  # 3 eval batches/epoch
    with pytest.raises(TrainError, match="non-finite evaluation loss in epoch 2") as exc:
        finetune(model, data, epochs=3, out=tmp_path, **COMMON)
    assert "(epoch 1)" in str(exc.value)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1]
    assert load_state(tmp_path / "last.state.pt")["epoch"] == 1


def test_failure_in_epoch_one_names_no_file(tmp_path: Path, data) -> None:
    model = make_hybrid()
    _on_call(model, 3, lambda m, out: out * float("nan"))
    with pytest.raises(TrainError, match="non-finite training loss in epoch 1") as exc:
        finetune(model, data, epochs=2, out=tmp_path, **COMMON)
    assert "no checkpoint was written" in str(exc.value)
    assert "safetensors" not in str(exc.value)
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.state.pt"))


def test_without_out_the_message_says_nothing_was_saved(data) -> None:
    model = make_hybrid()
    _on_call(model, 3, lambda m, out: out * float("nan"))
    with pytest.raises(TrainError, match=r"nothing was saved \(no --out\)"):
        finetune(model, data, epochs=1, **COMMON)
