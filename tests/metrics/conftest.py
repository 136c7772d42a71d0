"""Hand-built hybrids whose spikes are known exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

T = 8


class SumOverTime(nn.Module):
    """A decoder with no synaptic op (so the hand counts cover the twin's layers only)."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s.sum(dim=0)


def encoder() -> nn.Module:
    """Exact bit planes for inputs k/255 (already in [0, 1], rounded, MSB first)."""
    from hybridize.spiking import BitPlaneEncoder

    return BitPlaneEncoder(bits=T, normalize="auto", quantize="round")


@pytest.fixture
def linear_hybrid() -> nn.Module:
    """FusionBlock(Linear 4->3 | Linear 4->3 (weights 2 on one input each) -> LIF) -> Linear 3->2.

    With X_t in {0, 2}, the LIF (tau 2, V_th 1, hard reset to 0) spikes exactly when X_t = 2, so
    neuron j spikes once per 1-bit of its input: the spike count is a popcount.
    """
    from hybridize.spiking import LIF, FusionBlock, SpikingBranch

    twin_fc = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        twin_fc.weight.zero_()
        twin_fc.weight[0, 0] = twin_fc.weight[1, 2] = twin_fc.weight[2, 3] = 2.0
    twin = nn.Sequential(twin_fc, LIF(time_steps=T))
    block = FusionBlock(
        nn.Linear(4, 3), SpikingBranch(twin, encoder(), SumOverTime()), "learnable", 0.25
    )
    return nn.Sequential(block, nn.Linear(3, 2))


@pytest.fixture
def conv_hybrid() -> nn.Module:
    """FusionBlock(Conv 1->2 3x3 pad 1 | same conv -> LIF)."""
    from hybridize.spiking import LIF, FusionBlock, SpikingBranch

    twin = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), LIF(time_steps=T))
    return FusionBlock(nn.Conv2d(1, 2, 3, padding=1), SpikingBranch(twin, encoder(), SumOverTime()))


@pytest.fixture
def replace_model() -> nn.Module:
    """A replace-mode SpikingBranch (Linear 4->3 -> LIF), then an ANN Linear 3->2."""
    from hybridize.spiking import LIF, SpikingBranch

    twin = nn.Sequential(nn.Linear(4, 3), LIF(time_steps=T))
    return nn.Sequential(SpikingBranch(twin, encoder(), SumOverTime()), nn.Linear(3, 2))
