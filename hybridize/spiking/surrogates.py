"""Surrogate derivatives: encoder bit-plane stand-ins (docs/method.md 3) and spike functions (4).

Each surrogate carries its derivative (used by the custom backward passes) and its primitive
(the smooth function whose derivative it is; handy for checks and plots). The name -> surrogate
maps are read-only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from hybridize.spiking.options import (
    ENCODER_PERIOD_MEAN,
    ENCODER_SURROGATE_ALPHA,
    SPIKE_SURROGATE_ALPHA,
)

# ---------------------------------------------------------------------------------------------
# Encoder surrogates: functions of z (the scaled value), plane significance k (a tensor that
# broadcasts against z), alpha, offset and bits.  d_k(z) is the stand-in for dP_k/dz.
# ---------------------------------------------------------------------------------------------


def _u(z: Tensor, k: Tensor) -> Tensor:
    return z * (math.pi * torch.exp2(-k.to(z.dtype)))


def _odd_cosine_sum(u: Tensor, harmonics: int) -> Tensor:
    """sum_{n=1,3,..,2*harmonics-1} cos(n u), by the Chebyshev recurrence
    cos((n+2)u) = 2 cos(2u) cos(nu) - cos((n-2)u): two cosines whatever the harmonics.
    Consumes ``u`` (overwritten in place) to keep the backward's temporaries few."""
    c = torch.cos(u)
    total = c.clone()
    if harmonics > 1:
        two_cos2u = u.mul_(2.0).cos_().mul_(2.0)
        prev = c.clone()  # cos(-u) == cos(u)
        for _ in range(harmonics - 1):
            prev = prev.neg_().addcmul_(two_cos2u, c)  # now holds the next harmonic
            prev, c = c, prev
            total.add_(c)
    return total


def _fourier_derivative(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    scale = -2.0 * torch.exp2(-k.to(z.dtype))
    return _odd_cosine_sum(_u(z, k), int(alpha)).mul_(scale).add_(offset)


def fourier_derivative_released(z: Tensor, k: Tensor, alpha: float, offset: float) -> Tensor:
    """The Fourier d_k(z) evaluated as the released code does (compat has8-released): every
    harmonic's cosine directly, cos(((z pi) n) / 2^k), times 2 / 2^k, summed over n in one
    reduction, subtracted from the offset. Equal to :func:`_fourier_derivative` up to rounding;
    these exact steps make float32 gradients match the released code bit for bit."""
    c = torch.exp2(k.to(z.dtype))
    zpi = z * math.pi
    terms = [(2.0 / c) * torch.cos((zpi * n) / c) for n in range(1, 2 * int(alpha), 2)]
    return offset - torch.stack(terms).sum(0)


def _fourier_primitive(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    u = _u(z, k)
    series = sum(torch.sin(n * u) / n for n in range(1, 2 * int(alpha), 2))
    return 0.5 - (2.0 / math.pi) * series + offset * z


def _sigsine_derivative(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    u = _u(z, k)
    s = torch.sigmoid(alpha * torch.sin(u))
    return s * (1.0 - s) * (alpha * math.pi * torch.exp2(-k.to(z.dtype))) * torch.cos(u)


def _sigsine_primitive(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    return torch.sigmoid(alpha * torch.sin(_u(z, k)))


def _tanhsine_derivative(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    u = _u(z, k)
    t = torch.tanh(alpha * torch.sin(u))
    # 1/2 sech^2(a) == 1/2 (1 - tanh^2 a); never overflows, unlike 1/cosh^2.
    return 0.5 * (1.0 - t * t) * (alpha * math.pi * torch.exp2(-k.to(z.dtype))) * torch.cos(u)


def _tanhsine_primitive(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    return 0.5 * (torch.tanh(alpha * torch.sin(_u(z, k))) + 1.0)


def _ste_derivative(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    # 1 / (2^B - 1) per plane: with the matching bit-plane decoder, d decode(encode) / dr == 1.
    return torch.full_like(z * k.to(z.dtype), 1.0 / (2**bits - 1))


def _ste_primitive(z: Tensor, k: Tensor, alpha: float, offset: float, bits: int) -> Tensor:
    return (z * torch.ones_like(k, dtype=z.dtype)) / (2**bits - 1)


EncoderFn = Callable[[Tensor, Tensor, float, float, int], Tensor]


def range_mean_derivative(
    name: str, k: int, alpha: float | None, offset: float, bits: int
) -> float:
    """The mean of d_k(z) over the encoder's range z in [0, 2^B - 1], in float64:
    (primitive(2^B - 1) - primitive(0)) / (2^B - 1). For fourier this is offset plus a small
    term from the range not ending on a period boundary; for ste it is 1 / (2^B - 1)."""
    spec = ENCODER_SURROGATES[name]
    top = float(2**bits - 1)
    z = torch.tensor([0.0, top], dtype=torch.float64)
    kt = torch.tensor(float(k), dtype=torch.float64)
    p = spec.primitive(z, kt, 0.0 if alpha is None else alpha, offset, bits)
    return float((p[1] - p[0]) / top)


# (alpha, offset, bits) -> the mean of d_k(z) over one period of plane k (the same for every k).
PeriodMeanFn = Callable[[float, float, int], float]


@dataclass(frozen=True)
class EncoderSurrogate:
    """A smooth stand-in for the bit-plane square wave P_k(z).

    ``derivative(z, k, alpha, offset, bits)`` is d_k(z); ``primitive`` is the function it is the
    derivative of. ``default_alpha`` (from hybridize.spiking.options) is None when the surrogate
    takes no alpha. ``period_mean(alpha, offset, bits)`` (from the options too) is the
    closed-form mean of d_k over one period of plane k (the same for every k); where it is 0 the
    encoder's ``gain="unit"`` has nothing to calibrate (the scale itself uses
    :func:`range_mean_derivative`).
    """

    name: str
    derivative: EncoderFn
    primitive: EncoderFn

    @property
    def default_alpha(self) -> float | None:
        return ENCODER_SURROGATE_ALPHA[self.name]

    @property
    def period_mean(self) -> PeriodMeanFn:
        return ENCODER_PERIOD_MEAN[self.name]


ENCODER_SURROGATES = MappingProxyType(
    {
        s.name: s
        for s in (
            EncoderSurrogate("fourier", _fourier_derivative, _fourier_primitive),
            EncoderSurrogate("sigsine", _sigsine_derivative, _sigsine_primitive),
            EncoderSurrogate("tanhsine", _tanhsine_derivative, _tanhsine_primitive),
            EncoderSurrogate("ste", _ste_derivative, _ste_primitive),
        )
    }
)

# ---------------------------------------------------------------------------------------------
# Spike-function surrogates: functions of x = H - V_th; stand-ins for dHeaviside(x)/dx.
# ---------------------------------------------------------------------------------------------


def _atan_derivative(x: Tensor, alpha: float) -> Tensor:
    return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * x) ** 2)


def _atan_primitive(x: Tensor, alpha: float) -> Tensor:
    return torch.atan(math.pi / 2.0 * alpha * x) / math.pi + 0.5


def _sigmoid_derivative(x: Tensor, alpha: float) -> Tensor:
    s = torch.sigmoid(alpha * x)
    return alpha * s * (1.0 - s)


def _sigmoid_primitive(x: Tensor, alpha: float) -> Tensor:
    return torch.sigmoid(alpha * x)


def _rect_derivative(x: Tensor, alpha: float) -> Tensor:
    # a box of height alpha and width 1/alpha (unit area)
    return (x.abs() < 0.5 / alpha).to(x.dtype) * alpha


def _rect_primitive(x: Tensor, alpha: float) -> Tensor:
    return torch.clamp(alpha * x + 0.5, 0.0, 1.0)


def _triangle_derivative(x: Tensor, alpha: float) -> Tensor:
    # a triangle of height alpha and half-width 1/alpha (unit area)
    return alpha * torch.clamp(1.0 - alpha * x.abs(), min=0.0)


def _triangle_primitive(x: Tensor, alpha: float) -> Tensor:
    y = torch.clamp(alpha * x, -1.0, 1.0)
    return 0.5 + y - 0.5 * y * y.abs()


SpikeFn = Callable[[Tensor, float], Tensor]


@dataclass(frozen=True)
class SpikeSurrogate:
    """A smooth stand-in for Heaviside(x): ``derivative(x, alpha)`` and ``primitive(x, alpha)``;
    ``default_alpha`` comes from hybridize.spiking.options."""

    name: str
    derivative: SpikeFn
    primitive: SpikeFn

    @property
    def default_alpha(self) -> float:
        return SPIKE_SURROGATE_ALPHA[self.name]


SPIKE_SURROGATES = MappingProxyType(
    {
        "atan": SpikeSurrogate("atan", _atan_derivative, _atan_primitive),
        "sigmoid": SpikeSurrogate("sigmoid", _sigmoid_derivative, _sigmoid_primitive),
        "rect": SpikeSurrogate("rect", _rect_derivative, _rect_primitive),
        "triangle": SpikeSurrogate("triangle", _triangle_derivative, _triangle_primitive),
    }
)
