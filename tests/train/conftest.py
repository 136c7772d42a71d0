"""Tiny models and data for the training tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset


def make_hybrid(seed: int = 0, dropout: float = 0.2) -> nn.Module:
    """A 2-class-agnostic tiny hybrid: one conv FusionBlock (learnable gate, T=4) + head."""
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    torch.manual_seed(seed)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
    twin = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), LIF(time_steps=4))
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=4), BitPlaneDecoder(bits=4))
    return nn.Sequential(
        FusionBlock(ann, branch, gate="learnable"),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * 8 * 8, 3),
    )


def make_plain(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 8 * 8, 3)
    )


def make_data(n: int = 48, seed: int = 123) -> tuple[TensorDataset, TensorDataset]:
    """8x8 images in [0, 1] whose class is the brightest third of the image."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    y = torch.arange(n) % 3
    for i in range(n):
        x[i, 0, :, y[i] * 2 : y[i] * 2 + 3] += 0.6
    train, evl = TensorDataset(x, y), TensorDataset(x[: n // 2], y[: n // 2])
    train.targets, evl.targets = y, y[: n // 2]
    return train, evl


@pytest.fixture
def data() -> tuple[TensorDataset, TensorDataset]:
    return make_data()


def interrupt_at(model: nn.Module, call: int, send_signal: bool = False) -> None:
    """Stop the ``call``-th training forward of ``model`` (counted over the run) with Ctrl-C:
    a real SIGINT to this process when ``send_signal``, else a raised KeyboardInterrupt."""
    import signal

    calls = [0]

    def hook(module: nn.Module, args) -> None:
        if module.training:
            calls[0] += 1
            if calls[0] == call:
                if send_signal:  # Python's SIGINT handler raises KeyboardInterrupt here
                    signal.raise_signal(signal.SIGINT)
                else:
                    raise KeyboardInterrupt

    model.register_forward_pre_hook(hook)


COMMON = dict(batch_size=8, workers=0, progress=False, lr=1e-2, device="cpu")
