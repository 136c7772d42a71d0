"""The element-wise rules shared by the eager ops and the fused kernels, in one place so that
both compute the same values bit for bit: the LIF's charge and reset (docs/method.md 4) and
the encoder's normalisation and quantisation (2-3)."""

from __future__ import annotations

import torch
from torch import Tensor

from hybridize.spiking.options import QUANTIZE_MODES, check_choice


def lif_charge(
    x_t: Tensor, v: Tensor | float, tau: Tensor | float, v_reset: float | None, decay_input: bool
) -> Tensor:
    """H_t from the input X_t and the membrane V_{t-1}: a leak towards V_reset (0 for the soft
    reset) by 1/tau, the input scaled by 1/tau too with ``decay_input``."""
    rest = 0.0 if v_reset is None else v_reset
    return v + (x_t - (v - rest)) / tau if decay_input else v - (v - rest) / tau + x_t


def lif_reset(h: Tensor, s: Tensor, v_threshold: float, v_reset: float | None) -> Tensor:
    """V_t after the spikes S_t: minus the threshold (soft, ``v_reset=None``) or to V_reset."""
    return h - v_threshold * s if v_reset is None else h * (1.0 - s) + v_reset * s


def quantize(z: Tensor, mode: str = "round") -> Tensor:
    """Quantize z: ``none`` (as released), ``floor`` or ``round`` (half to even)."""
    check_choice("quantize", "mode", mode, QUANTIZE_MODES)
    if mode == "floor":
        return torch.floor(z)
    if mode == "round":
        return torch.round(z)
    return z


def normalize_range(x: Tensor, lo: Tensor | float, hi: Tensor | float, *, clamp: bool) -> Tensor:
    """r = (x - lo) / (hi - lo), r = 1 where hi == lo; no host sync, never a NaN gradient."""
    lo_t = _like(lo, x)
    hi_t = _like(hi, x)
    span = hi_t - lo_t
    ok = span > 0
    r = (x - lo_t) / torch.where(ok, span, torch.ones_like(span))
    r = torch.where(ok, r, torch.ones_like(r))
    return clamp_unit(r) if clamp else r


def clamp_unit(r: Tensor) -> Tensor:
    """r clamped to [0, 1] with the gradient 1 on the edges (r == 0, r == 1) and 0 outside.
    With a gradient it is written with ``where``: torch's own clamp passes no gradient on the
    edges in recent versions and did in older ones, and the fused kernels need one rule to
    match; without one (eval, export, the forward kernels) it is torch's clamp, same values."""
    if not (torch.is_grad_enabled() and r.requires_grad):
        return r.clamp(0.0, 1.0)
    return torch.where(r < 0.0, torch.zeros_like(r), torch.where(r > 1.0, torch.ones_like(r), r))


def _like(v: Tensor | float, x: Tensor) -> Tensor:
    """v as a tensor of x's dtype and device."""
    if isinstance(v, Tensor):
        return v.to(x.dtype)
    return torch.tensor(v, dtype=x.dtype, device=x.device)
