"""Non-finite gradient guard: which fusion block overflowed, and what to do about it.

Pure functions of a model whose ``.grad`` fields are filled by a backward pass; the training
loop checks :func:`grads_finite_tensor` after every backward and, when it fails, stops with
:func:`overflow_message` instead of stepping the optimizer into NaN weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hybridize.conversion.regions import ROOT_REGION
from hybridize.spiking import FusionBlock


@dataclass(frozen=True)
class BlockGrad:
    """Gradient state of one fusion block's own parameters (ANN path, twin and gate)."""

    name: str
    nonfinite: int  # parameters with at least one inf/NaN gradient entry
    max_abs: float  # largest finite |gradient| entry (0.0 when none)
    encoder_gain: str | None  # the block's encoder option ``gain`` (None: no such encoder)
    encoder_surrogate: str | None


def grads_finite_tensor(model: nn.Module) -> torch.Tensor:
    """A 0-dim bool tensor: every parameter gradient of ``model`` is finite (no host sync,
    so the loop can read it together with the loss)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([g.detach().isfinite().all() for g in grads]).all()


def _param_grad_state(params: list[nn.Parameter]) -> tuple[int, float]:
    bad, top = 0, 0.0
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.detach()
        ok = g.isfinite()
        if not bool(ok.all()):
            bad += 1
        finite = g[ok]
        if finite.numel():
            top = max(top, float(finite.abs().max()))
    return bad, top


def block_grads(model: nn.Module) -> list[BlockGrad]:
    """Every fusion block of ``model`` in module order (forward order for converted models),
    with the count of its parameters whose gradient holds inf/NaN and its largest finite one.
    Parameters of nested fusion blocks count for the innermost block only."""
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, FusionBlock)]
    out = []
    for name, block in blocks:
        nested = {
            id(p)
            for c in block.modules()
            if c is not block and isinstance(c, FusionBlock)
            for p in c.parameters()
        }
        own = [p for p in block.parameters() if id(p) not in nested]
        bad, top = _param_grad_state(own)
        options = getattr(getattr(block, "encoder", None), "options", None)
        out.append(
            BlockGrad(
                name=name or ROOT_REGION,
                nonfinite=bad,
                max_abs=top,
                encoder_gain=getattr(options, "gain", None),
                encoder_surrogate=getattr(options, "surrogate", None),
            )
        )
    return out


def overflow_message(model: nn.Module, where: str) -> str:
    """One line: where the gradient stopped being finite, the profile up to it, and the fix.

    Gradients grow backwards (output -> input), so the overflow starts at the *last* block in
    forward order that has non-finite gradients; every block before it inherits the inf/NaN.
    """
    blocks = block_grads(model)
    bad = [i for i, b in enumerate(blocks) if b.nonfinite]
    if not bad:
        return (
            f"{where}: non-finite gradient outside the fusion blocks; lower --lr, add "
            "--grad-clip, or use --amp bf16/off"
        )
    first = blocks[bad[-1]]
    after = [b for b in blocks[bad[-1] + 1 :] if b.max_abs > 0]
    profile = ""
    if after:
        tail = ", ".join(f"{b.name} {b.max_abs:.1e}" for b in after[:3])
        profile = f" (largest gradients just after it: {tail})"
    raw = [b for b in blocks if b.encoder_gain == "raw" and b.encoder_surrogate != "ste"]
    if raw:
        fix = (
            "set the recipe's encoder gain: unit (the raw surrogate multiplies the spiking "
            "path's gradient by hundreds per block; docs/training.md), or lower --lr / add "
            "--grad-clip"
        )
    else:
        fix = "lower --lr, add --grad-clip, or lower the gates' initial value"
    return (
        f"{where}: non-finite gradient in {len(bad)} of {len(blocks)} fusion blocks, starting "
        f"at {first.name!r}{profile}; {fix}"
    )
