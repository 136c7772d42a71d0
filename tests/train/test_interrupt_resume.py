"""Issue 14, item 3: Ctrl-C (SIGINT) in epoch 2, then --resume, ends bit for bit where an
uninterrupted run ends; the interrupt propagates (the CLI exits 130)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridize.train import TrainInterrupted, finetune, read_metrics
from hybridize.train.state import load_state

from .conftest import COMMON, interrupt_at, make_hybrid

STEPS = 6  # 48 images, batch 8


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigint_in_epoch_two_then_resume_is_bit_identical(tmp_path: Path, data) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    straight = finetune(make_hybrid(), data, epochs=3, out=tmp_path / "a", **COMMON)

    model = make_hybrid()
    interrupt_at(model, STEPS + 4, send_signal=True)  # a real SIGINT after 3 steps of epoch 2
    with pytest.raises(KeyboardInterrupt) as exc:
        finetune(model, data, epochs=3, out=tmp_path / "b", **COMMON)
    assert isinstance(exc.value, TrainInterrupted)
    assert "epoch 2" in str(exc.value) and "\n" not in str(exc.value)
    # the clean end-of-epoch-1 checkpoint is what the folder holds
    assert load_state(tmp_path / "b" / "last.state.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1]

    # a differently initialised model proves every weight comes from the run folder
    resumed = finetune(
        make_hybrid(seed=7), data, epochs=3, resume=True, out=tmp_path / "b", **COMMON
    )
    assert [r["epoch"] for r in resumed.history] == [2, 3]
    _same(straight.model.state_dict(), resumed.model.state_dict())
    _same(
        load_file(tmp_path / "a" / "last.safetensors"),
        load_file(tmp_path / "b" / "last.safetensors"),
    )
    _same(
        load_file(tmp_path / "a" / "best.safetensors"),
        load_file(tmp_path / "b" / "best.safetensors"),
    )
    a, b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    keys = ("epoch", "train_loss", "train_acc", "eval_loss", "eval_top1", "gates", "lr")
    assert [{k: r[k] for k in keys} for r in a] == [{k: r[k] for k in keys} for r in b]
    # the gate trained, so equal weights are not the trivial "nothing moved"
    assert all(v != 0 for v in a[-1]["gates"].values())


def test_sigint_in_epoch_one_says_nothing_was_kept(tmp_path: Path, data) -> None:
    model = make_hybrid()
    interrupt_at(model, 2, send_signal=True)
    with pytest.raises(TrainInterrupted, match="before the first checkpoint") as exc:
        finetune(model, data, epochs=2, out=tmp_path, **COMMON)
    assert "last.safetensors" not in str(exc.value)
    assert not (tmp_path / "last.safetensors").exists()
