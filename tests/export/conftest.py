"""Hand-built hybrids for the export tests (small, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

T = 8


def _conv_block(c_in: int, c_out: int, twin: bool) -> nn.Sequential:
    act = _lif() if twin else nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), act
    )


def _lif() -> nn.Module:
    from hybridize.spiking import LIF

    return LIF(time_steps=T)


def _branch(twin: nn.Module) -> nn.Module:
    from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, SpikingBranch

    return SpikingBranch(twin, BitPlaneEncoder(bits=T), BitPlaneDecoder(bits=T))


def _calibrate(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A few train-mode passes so BN statistics and running encoder ranges are realistic."""
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(8, *shape))
    return model.eval()


@pytest.fixture
def parallel_hybrid() -> nn.Module:
    """Conv FusionBlock (conv-BN-ReLU | conv-BN-LIF) -> pool -> 2-D linear-head FusionBlock."""
    from hybridize.spiking import FusionBlock

    torch.manual_seed(0)
    conv = FusionBlock(_conv_block(3, 8, False), _branch(_conv_block(3, 8, True)))
    head = FusionBlock(
        nn.Linear(8, 10), _branch(nn.Sequential(nn.Linear(8, 10), _lif())), gate="fixed"
    )
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return _calibrate(model, (3, 16, 16))


@pytest.fixture
def replace_hybrid() -> nn.Module:
    """A replace-mode SpikingBranch standing in for a conv block, then a plain linear head."""
    torch.manual_seed(1)
    block = _branch(_conv_block(3, 6, True))
    model = nn.Sequential(block, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5))
    return _calibrate(model, (3, 16, 16))
