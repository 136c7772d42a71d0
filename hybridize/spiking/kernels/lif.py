"""Fused multi-step LIF: the T-step forward and its BPTT backward as pure tensor functions (the
T loop unrolled: T is a small constant), compiled once per configuration and dtype by
:func:`run_kernel`, and the autograd.Function that calls them.

The forward runs the very ops of ``neuron.lif_step`` (so spikes equal the eager path bit for bit)
on a [T, M] view and keeps only H [T, M] for backward; S_t and V_{t-1} are recomputed from H.
The tau gradient of PLIF needs no X either: with decay_input, X_t - (V_{t-1} - V_rest) equals
(H_t - V_{t-1}) * tau.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hybridize.spiking.arithmetic import lif_charge, lif_reset
from hybridize.spiking.kernels._select import kernel_backend, run_kernel
from hybridize.spiking.kernels.layout import memory_order
from hybridize.spiking.surrogates import SPIKE_SURROGATES


@dataclass(frozen=True)
class LIFConfig:
    """The static options of a LIF (part of the kernel cache key)."""

    v_threshold: float
    v_reset: float | None
    decay_input: bool
    detach_reset: bool
    surrogate: str
    alpha: float


def lif_forward(x: Tensor, tau: Tensor | float, cfg: LIFConfig) -> tuple[Tensor, Tensor]:
    """x [T, M] -> (spikes [T, M], H [T, M]) from V = V_reset (0 for the soft reset)."""
    v: Tensor | float = 0.0 if cfg.v_reset is None else cfg.v_reset
    spikes, hs = [], []
    for t in range(x.shape[0]):
        h = lif_charge(x[t], v, tau, cfg.v_reset, cfg.decay_input)
        s = (h - cfg.v_threshold >= 0).to(x.dtype)
        v = lif_reset(h, s, cfg.v_threshold, cfg.v_reset)
        spikes.append(s)
        hs.append(h)
    return torch.stack(spikes), torch.stack(hs)


def lif_backward(
    grad: Tensor,
    hs: Tensor | Sequence[Tensor],
    tau: Tensor | float,
    cfg: LIFConfig,
    tau_grad: bool,
    spikes: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """BPTT through the recurrence: (dL/dX [T, ...], dL/d(1/tau) as a float64 scalar or None).

    The spikes are recomputed from H unless given (``spikes``: the forward's, when H is a
    rebuilt value that may sit an ulp across the threshold)."""
    v_th, v_reset = cfg.v_threshold, cfg.v_reset
    rest = 0.0 if v_reset is None else v_reset
    k = 1.0 / tau
    derivative = SPIKE_SURROGATES[cfg.surrogate].derivative
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    grad_x: list[Tensor] = [grad[0]] * grad.shape[0]
    leak_sum: Tensor | None = None
    dv: Tensor | float = 0.0  # dL/dV_t arriving from step t + 1
    for t in range(grad.shape[0] - 1, -1, -1):
        h = hs[t]
        u = h - v_th
        sg = derivative(u, cfg.alpha)
        if t == grad.shape[0] - 1:  # nothing flows back from after the last step
            dh = grad[t] * sg
        else:
            ds = grad[t]  # dL/dS_t: the output, plus the reset's use of S_t unless detached
            if not cfg.detach_reset:
                ds = ds + dv * (-v_th if v_reset is None else v_reset - h)
            s = (u >= 0).to(h.dtype) if spikes is None else spikes[t]
            dh = ds * sg + dv * (1.0 if v_reset is None else 1.0 - s)
        grad_x[t] = dh * k if cfg.decay_input else dh
        if tau_grad:
            if t == 0:
                v_prev: Tensor | float = rest
            else:
                hp = hs[t - 1]
                sp = (hp - v_th >= 0).to(hp.dtype) if spikes is None else spikes[t - 1]
                v_prev = lif_reset(hp, sp, v_th, v_reset)
            leak = (h - v_prev) * tau if cfg.decay_input else -(v_prev - rest)
            term = (dh * leak).to(acc)
            leak_sum = term if leak_sum is None else leak_sum + term
        dv = dh * (1.0 - k)
    grad_k = None if leak_sum is None else leak_sum.sum(dtype=torch.float64)
    return torch.stack(grad_x), grad_k


class FusedLIF(torch.autograd.Function):
    """The T-step LIF on [T, M] through the compiled kernels; saves only H [T, M]."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, tau: Tensor | float, cfg: LIFConfig) -> Tensor:
        # a float tau is baked into the kernel: one build per value (a tensor tau is an input)
        tau_key = tau if isinstance(tau, float) else None
        spikes, hs = run_kernel(("lif_forward", cfg, tau_key), lif_forward, x, tau, cfg)
        tau_grad = isinstance(tau, Tensor) and ctx.needs_input_grad[1]
        ctx.save_for_backward(hs, tau if isinstance(tau, Tensor) else None)
        ctx.cfg, ctx.tau_value, ctx.tau_grad = cfg, tau, tau_grad
        ctx.backend = kernel_backend()
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        hs, tau_t = ctx.saved_tensors
        tau = tau_t if tau_t is not None else ctx.tau_value
        tau_key = tau if isinstance(tau, float) else None
        key = ("lif_backward", ctx.cfg, ctx.tau_grad, tau_key)
        grad_x, grad_k = run_kernel(
            key, lif_backward, grad.contiguous(), hs, tau, ctx.cfg, ctx.tau_grad,
            backend=ctx.backend,
        )  # fmt: skip
        grad_tau = None
        if grad_k is not None:  # d(1/tau)/dtau = -1/tau^2
            grad_tau = (-grad_k / tau_t.double() ** 2).to(tau_t.dtype)
        return grad_x, grad_tau, None


def lif_spikes(x: Tensor, tau: Tensor | float, cfg: LIFConfig) -> Tensor:
    """x [T, M] -> spikes [T, M]: :func:`lif_forward` without H out (the compiled kernel then
    never writes it)."""
    return lif_forward(x, tau, cfg)[0]


def fused_lif_spikes(x: Tensor, tau: Tensor | float, cfg: LIFConfig) -> Tensor:
    """Spikes of the T-step LIF for x [T, ...] when no gradient is wanted: one fused pass that
    keeps nothing (eval, inference)."""
    tau_key = tau if isinstance(tau, float) else None
    order = memory_order(x)  # channels-last stays channels-last
    with torch.no_grad():  # the kernels are always traced without grad (no second trace)
        spikes = run_kernel(
            ("lif_spikes", cfg, tau_key), lif_spikes, order.flat(x, lead=1), tau, cfg
        )
    return order.restore(spikes, tuple(x.shape))


def divides_as_eager(tau: Tensor | float, device: torch.device) -> bool:
    """Whether the compiled LIF divides by ``tau`` bit for bit as eager does on ``device``.

    Inductor keeps a true division on the CPU. Elsewhere (Triton) it multiplies by the
    reciprocal of a constant divisor and divides by a tensor approximately, so only a float tau
    whose reciprocal is exact (a power of two, as the default 2.0) gives the same H and spikes.
    """
    if device.type == "cpu":
        return True
    return isinstance(tau, float) and tau > 0 and math.frexp(tau)[0] == 0.5
