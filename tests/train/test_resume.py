"""Checkpoints, resume exactness, Ctrl-C, non-finite loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hybridize.train import TrainError, finetune, read_metrics
from hybridize.train.state import load_state, rng_state, set_rng_state, state_path

from .conftest import COMMON, interrupt_at, make_hybrid


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_ends_with_the_same_weights(tmp_path: Path, data) -> None:
    straight = finetune(make_hybrid(), data, epochs=2, out=tmp_path / "a", **COMMON)
    first = finetune(make_hybrid(), data, epochs=2, stop_after=1, out=tmp_path / "b", **COMMON)
    assert first.stopped == "stop_after" and len(first.history) == 1
    # a differently initialised model proves the weights come from the checkpoint
    resumed = finetune(
        make_hybrid(seed=9), data, epochs=2, resume=True, out=tmp_path / "b", **COMMON
    )
    assert resumed.stopped is None
    _same(straight.model.state_dict(), resumed.model.state_dict())
    _same(
        load_file(tmp_path / "a" / "last.safetensors"),
        load_file(tmp_path / "b" / "last.safetensors"),
    )
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    # the run actually trained: the gate left 0
    assert straight.history[-1]["gates"] and all(
        v != 0 for v in straight.history[-1]["gates"].values()
    )
    state = load_state(tmp_path / "b" / "last.state.pt")  # weights_only=True
    assert state["epoch"] == 2 and state["best"] == max(r["eval_top1"] for r in b)


def test_metrics_and_config_files(tmp_path: Path, data) -> None:
    finetune(make_hybrid(), data, epochs=2, out=tmp_path, **COMMON)
    records = read_metrics(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2]
    r = records[-1]
    for key in ("train_loss", "train_acc", "eval_loss", "eval_top1", "eval_top5", "images_per_s"):
        assert isinstance(r[key], float)
    assert 0 <= r["firing_rate"] <= 1 and set(r["lr"]) >= {"ann", "spiking_no_decay"}
    assert r["train_samples"] == 48 and r["eval_samples"] == 24
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_state_round_trip() -> None:
    import random

    import numpy as np

    state = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(2))
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    set_rng_state(state)
    second = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], second[0]) and first[1] == second[1]
    assert (first[2] == second[2]).all()


class Boom(nn.Module):
    """Wraps a model; raises or returns NaN from the ``at``-th training forward on."""

    def __init__(self, inner: nn.Module, at: int, kind: str) -> None:
        super().__init__()
        self.inner, self.at, self.kind, self.calls = inner, at, kind, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                if self.kind == "interrupt":
                    raise KeyboardInterrupt
                return self.inner(x) * float("nan")
        return self.inner(x)


def test_ctrl_c_keeps_the_end_of_epoch_checkpoint(tmp_path: Path, data) -> None:
    from hybridize.train import TrainInterrupted

    finetune(make_hybrid(), data, epochs=3, stop_after=1, out=tmp_path, **COMMON)
    kept = (tmp_path / "last.safetensors").read_bytes(), (tmp_path / "last.state.pt").read_bytes()
    model = make_hybrid()
    interrupt_at(model, 3)  # inside epoch 2 of the resumed run
    with pytest.raises(TrainInterrupted, match="holds epoch 1") as exc:
        finetune(model, data, epochs=3, resume=True, out=tmp_path, **COMMON)
    assert "\n" not in str(exc.value) and "--resume" in str(exc.value)
    assert (tmp_path / "last.safetensors").read_bytes() == kept[0]
    assert (tmp_path / "last.state.pt").read_bytes() == kept[1]
    assert not (tmp_path / ".hybridize-run.lock").exists()  # released on the way out


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path: Path, data) -> None:
    model = Boom(make_hybrid(), at=8, kind="nan")
    with pytest.raises(TrainError, match="non-finite") as exc:
        finetune(model, data, epochs=3, out=tmp_path, **COMMON)
    assert "\n" not in str(exc.value) and "last.safetensors" in str(exc.value)
    kept = load_file(tmp_path / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert load_state(tmp_path / "last.state.pt")["epoch"] == 1


def test_resume_without_checkpoint_is_a_user_error(tmp_path: Path, data) -> None:
    from hybridize.errors import HybridizeError

    with pytest.raises(HybridizeError, match="not found"):
        finetune(make_hybrid(), data, epochs=1, resume=True, out=tmp_path, **COMMON)


def test_sigterm_ends_the_run_as_ctrl_c_does(tmp_path: Path, data) -> None:
    """A scheduler's SIGTERM (or torchrun's, when another rank failed) mid-epoch: one line,
    the last finished epoch kept, no temporary file, the lock released, the handler restored."""
    import signal

    from hybridize.train import TrainInterrupted

    model = make_hybrid()
    calls = [0]

    def terminate(module, args) -> None:
        calls[0] += module.training
        if module.training and calls[0] == 9:  # epoch 2 (6 steps each), step 3
            signal.raise_signal(signal.SIGTERM)

    model.register_forward_pre_hook(terminate)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainInterrupted, match="interrupted in epoch 2; .* holds epoch 1"):
        finetune(model, data, epochs=2, out=tmp_path, **COMMON)
    assert signal.getsignal(signal.SIGTERM) is before
    assert load_state(tmp_path / "last.state.pt")["epoch"] == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ctrl_c_after_the_epochs_commit_keeps_that_epoch(tmp_path: Path, data, monkeypatch):
    """Ctrl-C while epoch 2's weights file is written, after its training state (the commit
    record) is: the message says epoch 2 is kept, and --resume goes on with epoch 3."""
    from hybridize.train import TrainInterrupted
    from hybridize.train import run as run_module

    real = run_module.save_model

    def save_model(model, path):
        committed = path.name == "last.safetensors" and load_state(state_path(path))["epoch"]
        if committed == 2:
            raise KeyboardInterrupt
        return real(model, path)

    monkeypatch.setattr(run_module, "save_model", save_model)
    with pytest.raises(TrainInterrupted, match="while saving epoch 2, which is kept"):
        finetune(make_hybrid(), data, epochs=3, out=tmp_path, **COMMON)
    monkeypatch.undo()
    result = finetune(make_hybrid(), data, epochs=3, resume=True, out=tmp_path, **COMMON)
    assert [r["epoch"] for r in result.history] == [3]
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
