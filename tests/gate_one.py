"""Gradient checks of hybrids: the largest parameter gradient of a model and of its hybrid with
every gate at 1 (the setup of benchmarks/grad_profile.py: one train-mode cross-entropy
backward), for the gradient-bound tests; and whether a backward reaches given twins."""

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


def assert_backward_reaches(hybrid: nn.Module, x: torch.Tensor, prefixes: list[str]) -> None:
    """One train-mode backward of ``hybrid(x).square().mean()`` (gates as they are): the output
    and every gradient finite, and a non-zero gradient in a parameter under each prefix."""
    out = hybrid.train()(x)
    assert out.isfinite().all()
    out.square().mean().backward()
    grads = {n: p.grad for n, p in hybrid.named_parameters() if p.grad is not None}
    assert all(g.isfinite().all() for g in grads.values())
    for prefix in prefixes:
        reached = [g for n, g in grads.items() if n.startswith(prefix)]
        assert reached and any(g.abs().sum() > 0 for g in reached), prefix
