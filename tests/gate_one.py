"""Largest parameter gradient of a model and of its hybrid with every gate at 1 (the setup of
benchmarks/grad_profile.py: one train-mode cross-entropy backward), for the gradient-bound tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridize.spiking import FusionBlock


def max_grad(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """One train-mode backward of ``model``; its largest |parameter gradient| (all finite)."""
    model.zero_grad(set_to_none=True)
    model.train()
    F.cross_entropy(model(x), target).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g.isfinite().all() for g in grads)
    largest = max(g.abs().max().item() for g in grads)
    model.zero_grad(set_to_none=True)
    model.eval()
    return largest


def max_grad_at_gate_one(hybrid: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """:func:`max_grad` of ``hybrid`` with every fusion gate set to 1."""
    for block in hybrid.modules():
        if isinstance(block, FusionBlock):
            with torch.no_grad():
                block.gate.fill_(1.0)
    return max_grad(hybrid, x, target)
