"""Normalise and encode in one kernel: r = (x - lo) / (hi - lo) (``arithmetic.normalize_range``,
optionally clamped to [0, 1]), z = (2^B - 1) r and the planes of z forward; backward, the
encoder's surrogate gradient chained through the normalisation in one pass, and through lo and
hi when they are x's own minimum and maximum (a batch's range in training). Replaces about a
dozen eager ops (and their backward) around the encoder kernels, and saves x instead of z.

The range is one (lo, hi) per group of x: one group (a batch-wide or fixed range) or one per
sample (``minmax``). The gradient of a range taken from the data goes to the elements equal to
it, shared evenly among ties, as torch's ``amin`` / ``amax`` backward shares it.

CPU only: inductor keeps a true division there, so r and the planes equal the eager ones bit
for bit; Triton divides by a tensor approximately (see ``lif.divides_as_eager``), so on CUDA the
normalisation stays eager and only the encoder's own kernels run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hybridize.spiking.arithmetic import clamp_unit, normalize_range
from hybridize.spiking.kernels._select import kernel_backend, run_kernel
from hybridize.spiking.kernels.encoder import (
    EncoderKernelConfig,
    cosine_scheme,
    encoder_backward,
    encoder_forward,
)
from hybridize.spiking.kernels.layout import MemoryOrder, dense_order, memory_order


@dataclass(frozen=True)
class RangeConfig:
    """How x is mapped to [0, 1] before encoding (part of the kernel cache key)."""

    clamp: bool  # clamp r to [0, 1] (a fixed or running range the batch may exceed)
    from_data: bool  # lo and hi are each group's min and max of x: their gradient reaches x
    per_sample: bool  # one range per sample (dim 0), else one for the whole tensor


def range_encoder_forward(
    x: Tensor, lo: Tensor, hi: Tensor, cfg: EncoderKernelConfig, scale: float, clamp: bool
) -> Tensor:
    """x [G, L], lo and hi [G, 1] -> planes [B, G, L] of scale * normalize_range(x, lo, hi)."""
    return encoder_forward(normalize_range(x, lo, hi, clamp=clamp) * scale, cfg)


def range_encoder_backward(
    x: Tensor,
    lo: Tensor,
    hi: Tensor,
    grad: Tensor,
    weights: Tensor,
    cfg: EncoderKernelConfig,
    scale: float,
    rng: RangeConfig,
    cosines: str,
) -> Tensor:
    """dL/dx [G, L] for the planes' gradient ``grad`` [B, G, L] (``weights`` [B] as in
    :func:`encoder_backward`), through the normalisation and, ``rng.from_data``, its range."""
    span = hi - lo
    ok = span > 0
    safe = torch.where(ok, span, torch.ones_like(span))
    r = torch.where(ok, (x - lo) / safe, torch.ones_like(x))  # before the clamp
    z = (clamp_unit(r) if rng.clamp else r) * scale  # the encoder's z, as eager's
    g = encoder_backward(z, grad, weights, cfg, cosines) * scale  # dL/dr
    if rng.clamp:  # clamp_unit's gradient: 1 inside and on the edges
        g = torch.where((r < 0.0) | (r > 1.0), torch.zeros_like(g), g)
    g = torch.where(ok, g, torch.zeros_like(g))
    dx = g / safe
    if rng.from_data:
        # r = (x - lo) / (hi - lo): dr/dlo = (r - 1) / span, dr/dhi = -r / span
        g_lo = (g * (r - 1.0)).sum(1, keepdim=True) / safe
        g_hi = -(g * r).sum(1, keepdim=True) / safe
        at_lo, at_hi = x == lo, x == hi
        share_lo = g_lo / at_lo.sum(1, keepdim=True).to(x.dtype)
        share_hi = g_hi / at_hi.sum(1, keepdim=True).to(x.dtype)
        dx = (
            dx
            + _to_ties(at_lo, share_lo, rng.per_sample)
            + _to_ties(at_hi, share_hi, rng.per_sample)
        )
    return dx


def _to_ties(tied: Tensor, share: Tensor, per_sample: bool) -> Tensor:
    """Each group's share on its tied elements, as torch's backward puts it there: ``amin`` /
    ``amax`` (per sample) multiply by the tie mask, so a NaN share (a NaN or infinite sample)
    reaches the whole sample; ``min()`` / ``max()`` (the whole tensor) fill it in, only on the
    tied elements."""
    if per_sample:
        return tied.to(share.dtype) * share
    return torch.where(tied, share, torch.zeros_like(share))


def _grouped(x: Tensor, per_sample: bool) -> tuple[MemoryOrder, Tensor]:
    """x's memory order (dim 0 outermost for per-sample ranges) and x as [G, L] in it."""
    order = memory_order(x, outer=1 if per_sample else 0)
    flat = order.flat(x)
    return order, flat.reshape(x.shape[0] if per_sample and x.ndim else 1, -1)


def _range_columns(lo: Tensor, hi: Tensor, groups: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """lo and hi (scalars or one per sample) as [G, 1] in x's dtype, without a gradient."""
    return (
        lo.detach().to(like.dtype).reshape(groups, 1),
        hi.detach().to(like.dtype).reshape(groups, 1),
    )


def _planes(
    x: Tensor, lo: Tensor, hi: Tensor, cfg: EncoderKernelConfig, scale: float, rng: RangeConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Planes [B, *x.shape] from the compiled forward kernel, in x's memory order, and the
    range as the kernel took it ([G, 1] columns)."""
    order, flat = _grouped(x, rng.per_sample)
    lo_c, hi_c = _range_columns(lo, hi, flat.shape[0], flat)
    with torch.no_grad():  # the kernels are always traced without grad (no second trace)
        planes = run_kernel(
            ("range_encoder_forward", cfg, scale, rng.clamp),
            range_encoder_forward, flat, lo_c, hi_c, cfg, scale, rng.clamp,
        )  # fmt: skip
    shaped = order.restore(planes.reshape(planes.shape[0], -1), tuple(x.shape), extra=1)
    return shaped, lo_c, hi_c


def range_planes(
    x: Tensor, lo: Tensor, hi: Tensor, cfg: EncoderKernelConfig, scale: float, rng: RangeConfig
) -> Tensor:
    """Planes [B, *x.shape] of scale * normalize_range(x, lo, hi) through the compiled forward
    kernel, without a gradient (eval, or an image), in x's memory order."""
    return _planes(x, lo, hi, cfg, scale, rng)[0]


class FusedRangeBitPlane(torch.autograd.Function):
    """Planes of quantize(scale * normalize_range(x, lo, hi)) forward; the surrogate backward
    chained through the normalisation (and its range when taken from x). Saves x, lo and hi:
    x itself, so changing x in place before backward is an error (as for any op that saves
    its input; the eager path saves x as well for a range taken from the data)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        lo: Tensor,
        hi: Tensor,
        weights_fn: Callable[[Tensor], Tensor],
        cfg: EncoderKernelConfig,
        scale: float,
        rng: RangeConfig,
    ) -> Tensor:
        planes, lo_c, hi_c = _planes(x, lo, hi, cfg, scale, rng)
        ctx.save_for_backward(x, lo_c, hi_c)
        ctx.weights_fn, ctx.cfg, ctx.scale, ctx.rng = weights_fn, cfg, scale, rng
        ctx.cosines = cosine_scheme()  # chosen with the forward, as FusedBitPlane's
        ctx.backend = kernel_backend()
        return planes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, lo_c, hi_c = ctx.saved_tensors
        rng: RangeConfig = ctx.rng
        order, flat = _grouped(x, rng.per_sample)
        planes_order = MemoryOrder((0, *(d + 1 for d in order.perm)))
        g = planes_order.flat(grad, lead=1).reshape(grad.shape[0], *flat.shape)
        weights = ctx.weights_fn(x).reshape(-1).to(x.dtype)
        dx = run_kernel(
            ("range_encoder_backward", ctx.cfg, ctx.scale, rng, ctx.cosines),
            range_encoder_backward, flat, lo_c, hi_c, g, weights, ctx.cfg, ctx.scale, rng,
            ctx.cosines, backend=ctx.backend,
        )  # fmt: skip
        return order.restore(dx.reshape(-1), tuple(x.shape)), None, None, None, None, None, None


def fuses_range(x: Tensor, rng: RangeConfig) -> bool:
    """Whether the normalisation can join the encoder's kernels for x: on the CPU (bit for
    bit), and for per-sample ranges where dim 0 lies outermost in memory (the kernels see x as
    [samples, rest] without a copy, and the planes keep x's strides)."""
    if x.device.type != "cpu":
        return False
    return not rng.per_sample or x.ndim == 0 or dense_order(x, outer=1) is not None
