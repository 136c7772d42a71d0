"""The element-wise rules shared by the eager ops and the fused kernels, in one place so that
both compute the same values bit for bit: the LIF's charge and reset (docs/method.md 4) and
the encoder's quantisation (3)."""

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
