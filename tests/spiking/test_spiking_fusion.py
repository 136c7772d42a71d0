"""SpikingBranch folding and FusionBlock gating (METHOD.md section 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hybridize.errors import HybridizeError
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch


def _conv_branch(bits: int = 4, channels: int = 3) -> SpikingBranch:
    twin = nn.Sequential(
        nn.Conv2d(2, channels, 3, padding=1), nn.BatchNorm2d(channels), LIF(time_steps=bits)
    )
    return SpikingBranch(twin, BitPlaneEncoder(bits=bits), BitPlaneDecoder(bits=bits))


class _Recorder(nn.Module):
    """Identity that records the shapes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x


def test_branch_folds_time_into_batch_and_decodes() -> None:
    rec = _Recorder()
    enc = BitPlaneEncoder(bits=5, normalize="fixed", lo=0.0, hi=1.0, quantize="round")
    branch = SpikingBranch(rec, enc, BitPlaneDecoder(bits=5))
    x = torch.rand(3, 2, 4, 4)
    y = branch(x)
    assert rec.shapes == [(15, 2, 4, 4)]
    # an identity twin makes the branch the quantiser: round(31 x) / 31
    assert torch.allclose(y, torch.round(x * 31) / 31, atol=1e-6)


def test_fusion_gate_zero_is_bit_exact_and_still_learns() -> None:
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU())
    block = FusionBlock(ann, _conv_branch(), gate="learnable")
    x = torch.randn(2, 2, 5, 5)
    y = block(x)
    assert torch.equal(y, ann(x))
    y.square().sum().backward()
    assert block.gate.grad is not None and block.gate.grad.abs() > 0
    assert isinstance(block.gate, nn.Parameter)
    assert block.encoder is block.branch.encoder and block.twin is block.branch.twin
    assert block.decoder is block.branch.decoder and block.ann is ann


def test_fixed_gate_is_a_buffer_and_sums_both_paths() -> None:
    torch.manual_seed(1)
    ann = nn.Conv2d(2, 3, 3, padding=1)
    branch = _conv_branch().eval()
    block = FusionBlock(ann, branch).eval()
    assert "gate" in dict(block.named_buffers()) and block.gate.item() == 1.0
    x = torch.randn(2, 2, 5, 5)
    assert torch.allclose(block(x), ann(x) + branch(x))
    half = FusionBlock(ann, branch, gate_init=0.5).eval()
    assert torch.allclose(half(x), ann(x) + 0.5 * branch(x))


@pytest.mark.parametrize(("shape", "dim"), [((2, 3, 4, 4), 1), ((2, 5, 3), 2), ((4, 3), 1)])
def test_per_channel_gate_broadcast(shape, dim) -> None:
    channels = shape[dim]
    rec = _Recorder()
    branch = SpikingBranch(
        rec, BitPlaneEncoder(bits=3, normalize="minmax"), BitPlaneDecoder(bits=3)
    )
    block = FusionBlock(nn.Identity(), branch, gate="learnable", gate_channels=channels)
    with torch.no_grad():
        block.gate.copy_(torch.arange(channels, dtype=torch.float32))
    x = torch.randn(*shape)
    view = [1] * len(shape)
    view[dim] = channels
    expected = x + torch.arange(channels, dtype=torch.float32).reshape(view) * branch(x)
    assert torch.allclose(block(x), expected)
    with pytest.raises(HybridizeError, match="gate_channels"):
        FusionBlock(nn.Identity(), branch, gate_channels=channels + 1)(x)


def test_branch_rejects_mismatched_time_steps() -> None:
    twin = nn.Sequential(nn.Linear(3, 3), LIF(time_steps=4))
    with pytest.raises(HybridizeError, match="time_steps=8"):
        SpikingBranch(twin, BitPlaneEncoder(bits=8), BitPlaneDecoder(bits=8))
    with pytest.raises(HybridizeError):
        SpikingBranch(nn.Identity(), BitPlaneEncoder(bits=8), BitPlaneDecoder(bits=4))
    with pytest.raises(HybridizeError, match="choose one of: fixed, learnable"):
        FusionBlock(
            nn.Identity(),
            SpikingBranch(nn.Identity(), BitPlaneEncoder(), BitPlaneDecoder()),
            gate="open",
        )


def test_linear_head_two_training_steps() -> None:
    torch.manual_seed(2)
    twin = nn.Sequential(nn.Linear(6, 4), LIF(time_steps=8), nn.Linear(4, 3), LIF(time_steps=8))
    branch = SpikingBranch(twin, BitPlaneEncoder(), BitPlaneDecoder())
    block = FusionBlock(nn.Linear(6, 3), branch, gate="learnable", gate_init=0.3)
    opt = torch.optim.SGD(block.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        out = block(torch.randn(5, 6))
        assert out.shape == (5, 3)
        out.square().mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
        opt.step()
