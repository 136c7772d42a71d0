"""Fused bit-plane encoder: quantize + all planes in one pass forward, the surrogate backward
(every plane's d_k(z) in registers, summed) in one pass, as pure tensor functions compiled by
:func:`run_kernel`, and the autograd.Function that calls them.

The plane arithmetic is ``encoder.bit_planes``' (powers of two and floors: exact, so the planes
equal the eager ones bit for bit); the surrogate derivatives are ``surrogates.py``'s, evaluated
one plane at a time. The per-plane weights come in as a [B] tensor (from
``encoder.plane_gradient_weights``), so new weighting modes need no kernel change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hybridize.spiking.arithmetic import quantize
from hybridize.spiking.kernels._select import kernel_backend, run_kernel
from hybridize.spiking.kernels.layout import MemoryOrder, memory_order
from hybridize.spiking.surrogates import ENCODER_SURROGATES


@dataclass(frozen=True)
class EncoderKernelConfig:
    """The static options the encoder kernels depend on (part of the kernel cache key)."""

    ks: tuple[int, ...]  # plane significance k of each time step t
    quantize: str
    surrogate: str
    alpha: float
    offset: float
    bits: int


def encoder_forward(z: Tensor, cfg: EncoderKernelConfig) -> Tensor:
    """z [M] -> planes [B, M] of quantize(z) (B = len(cfg.ks)), in z's dtype."""
    zq = quantize(z, cfg.quantize)
    planes = []
    for k in cfg.ks:
        q = zq * 2.0**-k  # exact: a power of two
        lower = q if k == 0 else torch.floor(q)
        planes.append(lower - 2.0 * torch.floor(0.5 * q))
    return torch.stack(planes)


# How the fused backward gets its cosines: "direct" (one cosine per angle, in z's dtype) or
# "doubling" (one float64 cosine per element, the rest by the double-angle formula). Internal:
# the default is :func:`cosine_scheme`'s; benchmarks set "doubling" around a forward (the
# backward takes the forward's choice) to compare the two on a machine.
COSINES: str | None = None


def cosine_scheme() -> str:
    """The fused backward's cosine scheme: "direct" (B + 1 cosines in z's dtype) unless
    ``COSINES`` says otherwise. "doubling" is closer to the exact values (5.5e-7 against 1.0e-6
    of the largest derivative) but a compiled float64 cosine costs 6.3 float32 ones on some CPUs
    (docs/performance.md). One scheme on every machine: the gradient does not depend on which
    is faster where it runs."""
    return COSINES if COSINES is not None else "direct"


def encoder_backward(
    z: Tensor, grad: Tensor, weights: Tensor, cfg: EncoderKernelConfig, cosines: str = "direct"
) -> Tensor:
    """dL/dz [M] = sum_t weights[t] d_{k_t}(z) grad[t] for grad [B, M], weights [B]; ``cosines``
    as :func:`cosine_scheme` returns (the fourier surrogate's; the values agree to rounding)."""
    derivative = _fourier_planes(z, cfg, cosines) if cfg.surrogate == "fourier" else None
    total: Tensor | None = None
    for t, k in enumerate(cfg.ks):
        if derivative is not None:
            d = derivative[k]
        else:
            kt = torch.full((), k, dtype=z.dtype, device=z.device)
            d = ENCODER_SURROGATES[cfg.surrogate].derivative(z, kt, cfg.alpha, cfg.offset, cfg.bits)
        term = d * weights[t] * grad[t]
        total = term if total is None else total + term
    assert total is not None
    return total


def _direct_cosines(z: Tensor, ks: list[int]) -> dict[int, Tensor]:
    """cos(u_k) for each k in ks, one cosine each, in z's dtype (u_k rounded as eager's)."""
    return {k: torch.cos(z * (math.pi * 2.0**-k)) for k in ks}


def _doubled_cosines(z: Tensor, ks: list[int]) -> dict[int, Tensor]:
    """cos(u_k) for the consecutive ks from one float64 cosine: cos(u_{k-1}) = 2 cos(u_k)^2 - 1.

    Eager's angles are u_k = U 2^-k with U = z pi rounded once to z's dtype (the power of two is
    exact), so they are exact doublings of each other; from U in float64 the recurrence's error
    (at most x4 per doubling, ~1e-11 after 9) stays far below float32 rounding, and each cosine
    is rounded once to z's dtype."""
    top = max(ks)
    c = torch.cos((z * math.pi).to(torch.float64) * 2.0**-top)
    cosines = {top: c.to(z.dtype)}
    for k in range(top - 1, min(ks) - 1, -1):
        c = 2.0 * c * c - 1.0
        cosines[k] = c.to(z.dtype)
    return cosines


def _fourier_planes(z: Tensor, cfg: EncoderKernelConfig, scheme: str) -> dict[int, Tensor]:
    """The fourier surrogate d_k(z) of every plane k (surrogates.py's formula: offset -
    2^(1-k) sum_{n odd < 2 alpha} cos(n u_k), u_k = pi z 2^-k, by the same Chebyshev recurrence),
    sharing cosines across planes: 2 u_k is exactly u_{k-1} (a doubling is exact), so B planes
    need the cosines of u_k for k in ks and k - 1: B + 1 of them ("direct"), or one
    ("doubling", when the ks are consecutive as every encoder order gives)."""
    harmonics = int(cfg.alpha)
    needed = sorted({j for k in cfg.ks for j in ((k, k - 1) if harmonics > 1 else (k,))})
    consecutive = needed == list(range(needed[0], needed[-1] + 1))
    if scheme == "doubling" and consecutive:
        cosines = _doubled_cosines(z, needed)
    else:
        cosines = _direct_cosines(z, needed)
    planes = {}
    for k in cfg.ks:
        c = cosines[k]
        total, prev, cur = c, c, c  # cos(-u) == cos(u)
        if harmonics > 1:
            two_cos2u = cosines[k - 1] * 2.0
            for _ in range(harmonics - 1):
                prev, cur = cur, two_cos2u * cur - prev
                total = total + cur
        planes[k] = total * (-2.0 * 2.0**-k) + cfg.offset
    return planes


def fused_planes(z: Tensor, cfg: EncoderKernelConfig) -> Tensor:
    """Planes [B, *z.shape] of quantize(z) through the compiled :func:`encoder_forward`, each
    plane in z's memory order (channels-last z: channels-last planes)."""
    order = memory_order(z, outer=0)
    with torch.no_grad():  # the kernels are always traced without grad (no second trace)
        planes = run_kernel(("encoder_forward", cfg), encoder_forward, order.flat(z), cfg)
    return order.restore(planes, tuple(z.shape), extra=1)


class FusedBitPlane(torch.autograd.Function):
    """Planes of quantize(z) forward; surrogate backward at the unrounded z. Saves only z."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, weights_fn: Any, cfg: EncoderKernelConfig) -> Tensor:
        ctx.save_for_backward(z)
        ctx.weights_fn, ctx.cfg = weights_fn, cfg
        ctx.cosines = cosine_scheme()  # chosen with the forward (COSINES may change by then)
        ctx.backend = kernel_backend()  # likewise the kernel setting
        return fused_planes(z, cfg)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (z,) = ctx.saved_tensors
        cfg: EncoderKernelConfig = ctx.cfg
        weights = ctx.weights_fn(z).reshape(-1).to(z.dtype)
        order = memory_order(z, outer=0)  # z's element order, for z, its planes' grad and dz
        planes_order = MemoryOrder((0, *(d + 1 for d in order.perm)))
        g = planes_order.flat(grad, lead=1)
        cosines = ctx.cosines
        dz = run_kernel(
            ("encoder_backward", cfg, cosines),
            encoder_backward, order.flat(z), g, weights, cfg, cosines, backend=ctx.backend,
        )  # fmt: skip
        return order.restore(dz, tuple(z.shape)), None, None


def encoder_kernel_config(opts: Any, ks: tuple[int, ...]) -> EncoderKernelConfig:
    """The kernel configuration of resolved encoder options (``options.EncoderOptions``)."""
    return EncoderKernelConfig(
        ks=ks,
        quantize=opts.quantize,
        surrogate=opts.surrogate,
        alpha=0.0 if opts.alpha is None else float(opts.alpha),
        offset=float(opts.offset),
        bits=opts.bits,
    )
