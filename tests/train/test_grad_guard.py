"""The non-finite gradient guard: which fusion block overflowed, and the training stop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hybridize.train import TrainError, finetune
from hybridize.train.grad_guard import (
    block_grads,
    grads_finite_tensor,
    overflow_message,
)

from .conftest import COMMON


def _block(gain: str = "raw") -> nn.Module:
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    twin = nn.Sequential(nn.Linear(4, 4), LIF(time_steps=4))
    enc = BitPlaneEncoder(bits=4, gain=gain)
    return FusionBlock(nn.Linear(4, 4), SpikingBranch(twin, enc, BitPlaneDecoder(bits=4)))


def _stack(gain: str = "raw") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(_block(gain), _block(gain), _block(gain), nn.Linear(4, 3))


def _fill_grads(model: nn.Module, value: float = 0.5) -> None:
    for p in model.parameters():
        p.grad = torch.full_like(p, value)


def test_finite_model_reports_nothing():
    model = _stack()
    _fill_grads(model)
    assert bool(grads_finite_tensor(model))
    assert [b for b in block_grads(model) if b.nonfinite] == []
    grads = block_grads(model)
    assert [b.name for b in grads] == ["0", "1", "2"]
    assert all(b.max_abs == 0.5 and b.encoder_gain == "raw" for b in grads)


def test_overflow_is_located_at_the_last_bad_block_in_forward_order():
    model = _stack()
    _fill_grads(model)
    model[0].branch.twin[0].weight.grad[0, 0] = float("nan")
    model[1].ann.weight.grad[1, 1] = float("inf")
    model[2].ann.weight.grad.fill_(3e4)
    assert not bool(grads_finite_tensor(model))
    bad = [b for b in block_grads(model) if b.nonfinite]
    assert [(b.name, b.nonfinite) for b in bad] == [("0", 1), ("1", 1)]
    assert [b.max_abs for b in bad] == [0.5, 0.5]  # largest *finite* entry
    msg = overflow_message(model, "demo epoch 1 step 3")
    assert msg.startswith("demo epoch 1 step 3: non-finite gradient in 2 of 3 fusion blocks")
    assert "starting at '1'" in msg and "2 3.0e+04" in msg
    assert "gain: unit" in msg and "\n" not in msg


def test_fix_depends_on_the_encoder_gain():
    model = _stack(gain="unit")
    _fill_grads(model)
    model[2].ann.bias.grad[0] = float("inf")
    msg = overflow_message(model, "x")
    assert "starting at '2'" in msg and "gain: unit" not in msg and "--lr" in msg


def test_overflow_outside_fusion_blocks():
    model = _stack()
    _fill_grads(model)
    model[3].bias.grad[0] = float("-inf")
    assert [b for b in block_grads(model) if b.nonfinite] == []
    assert "outside the fusion blocks" in overflow_message(model, "x")


def test_plain_model_and_no_grads():
    plain = nn.Linear(2, 2)
    assert bool(grads_finite_tensor(plain)) and block_grads(plain) == []


class _InfGrad(nn.Module):
    """Finite forward and loss; from step ``at`` on, the first block's twin gets an inf grad."""

    def __init__(self, inner: nn.Module, at: int) -> None:
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0
        weight = inner[0].branch.twin[0].weight
        weight.register_hook(lambda g: g * float("inf") if self.calls >= self.at else g)

    def forward(self, x):
        if self.training:
            self.calls += 1
        return self.inner(x)


def test_training_stops_with_the_diagnosis_and_keeps_finite_weights(tmp_path: Path, data):
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    twin = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), LIF(time_steps=4))
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=4), BitPlaneDecoder(bits=4))
    inner = nn.Sequential(
        FusionBlock(ann, branch, gate="learnable"), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    )
    model = _InfGrad(inner, at=8)  # 6 steps per epoch: fails in epoch 2, step 2
    with pytest.raises(TrainError) as exc:
        finetune(model, data, epochs=3, out=tmp_path, **COMMON)
    msg = str(exc.value)
    assert "epoch 2 step 2" in msg and "starting at 'inner.0'" in msg and "\n" not in msg
    kept = load_file(tmp_path / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # never stepped into NaN


class _NaNGrad(nn.Module):
    """Two fusion blocks; from the first training step on, the first block's twin weight gets
    a NaN gradient, the second block's gradients stay finite."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inner = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 4), _block(), _block(), nn.Linear(4, 3)
        )
        self.inner[2].branch.twin[0].weight.register_hook(lambda g: g * float("nan"))

    def forward(self, x):
        return self.inner(x)


def test_grad_clip_does_not_hide_which_block_overflowed(tmp_path: Path, data):
    """Clipping by a NaN total norm would make every gradient NaN (all blocks 'bad', the
    diagnosis at the last one): the check runs on the unclipped gradients."""
    with pytest.raises(TrainError) as exc:
        finetune(_NaNGrad(), data, epochs=1, out=tmp_path, grad_clip=1.0, **COMMON)
    msg = str(exc.value)
    assert "non-finite gradient in 1 of 2 fusion blocks" in msg
    assert "starting at 'inner.2'" in msg
