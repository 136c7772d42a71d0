"""Per-sample drops (stochastic depth) in a twin: one draw per sample for all T steps.

timm's ``DropPath`` and torchvision's ``StochasticDepth`` zero whole samples, drawing along
dim 0. In a twin dim 0 is the folded ``[T*N]`` (t-major), so each bit plane of a sample would
be dropped on its own and the decoded value corrupted, rather than the sample's path dropped.
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

# module classes that draw one mask value per row of dim 0, by import path
PER_SAMPLE_DROPS: tuple[str, ...] = ("timm.layers.DropPath", "torchvision.ops.StochasticDepth")


def _classes() -> tuple[type, ...]:
    found = []
    for path in PER_SAMPLE_DROPS:
        module_name, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError):  # that library not installed, or renamed
            continue
        found.append(cls)
    return tuple(found)


class DropOverTime(nn.Module):
    """``inner`` (a per-sample drop) on a twin's ``[T*N, ...]`` activations, with the T steps
    of a sample moved off dim 0 so the sample is kept or dropped as a whole."""

    def __init__(self, inner: nn.Module, time_steps: int) -> None:
        super().__init__()
        self.inner, self.time_steps = inner, time_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.time_steps
        if not self.training or x.dim() == 0 or x.shape[0] % t:
            return self.inner(x)
        steps = x.reshape(t, x.shape[0] // t, *x.shape[1:]).transpose(0, 1)  # [N, T, ...]
        return self.inner(steps).transpose(0, 1).reshape(x.shape)


def drop_over_time(module: nn.Module, time_steps: int | None) -> nn.Module | None:
    """``module`` wrapped in :class:`DropOverTime` when it is a per-sample drop, else None."""
    if time_steps is None or not isinstance(module, _classes()):
        return None
    return DropOverTime(module, time_steps)
