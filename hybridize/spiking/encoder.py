"""Bit-plane encoder (METHOD.md 2-3): normalise -> scale -> quantise -> bit planes, with the
surrogate backward of section 3 as a custom autograd.Function that saves only z.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from hybridize.spiking._options import (
    SpikingConfigError,
    check_bits,
    check_choice,
    check_number,
    compute_dtype,
    use_custom_backward,
)
from hybridize.spiking.kernels import (
    FusedBitPlane,
    compacting,
    encoder_kernel_config,
    mark_binary,
    use_fused,
)
from hybridize.spiking.surrogates import (
    ENCODER_SURROGATES,
    fourier_derivative_released,
    range_mean_derivative,
)

ORDERS = ("msb", "lsb")
NORMALIZE_MODES = ("auto", "minmax", "running", "fixed")
QUANTIZE_MODES = ("none", "floor", "round")
RESCALE_MODES = ("order-aware", "none")
GAIN_MODES = ("raw", "unit")
COMPAT_PRESETS = ("has8-released",)

# Defaults when no compat preset is given (the public contract's defaults).
ENCODER_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "order": "msb",
        "normalize": "running",
        "quantize": "round",
        "surrogate": "fourier",
        "offset": 0.5,
        "gain": "raw",
    }
)
# compat="has8-released": what the released HAS-8 code does.
HAS8_RELEASED_ENCODER: Mapping[str, Any] = MappingProxyType(
    {
        "order": "lsb",
        "normalize": "auto",
        "quantize": "none",
        "surrogate": "fourier",
        "alpha": 5,
        "offset": 0.5,
        "rescale": "order-aware",
        "gain": "raw",
    }
)


# ------------------------------------------------------------------------------ functional core


def significance(bits: int, order: str = "msb", device: torch.device | None = None) -> Tensor:
    """Plane significance k of each time step t: [B-1, ..., 0] for msb, [0, ..., B-1] for lsb."""
    k = torch.arange(bits, device=device)
    return k.flip(0) if order == "msb" else k


def order_aware_factors(bits: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """F_k = k / 2^(B-1-k) for k = 0..B-1 (least significant first); exact in floating point."""
    k = torch.arange(bits, dtype=dtype)
    return k * torch.exp2(k - (bits - 1))


def _broadcast_k(k: Tensor, ndim: int, dtype: torch.dtype) -> Tensor:
    return k.to(dtype).reshape(-1, *([1] * ndim))


def normalise_range(x: Tensor, lo: Tensor | float, hi: Tensor | float, *, clamp: bool) -> Tensor:
    """r = (x - lo) / (hi - lo), r = 1 where hi == lo; no host sync, never a NaN gradient."""
    lo_t = (
        lo.to(x.dtype)
        if isinstance(lo, Tensor)
        else torch.tensor(lo, dtype=x.dtype, device=x.device)
    )
    hi_t = (
        hi.to(x.dtype)
        if isinstance(hi, Tensor)
        else torch.tensor(hi, dtype=x.dtype, device=x.device)
    )
    span = hi_t - lo_t
    ok = span > 0
    r = (x - lo_t) / torch.where(ok, span, torch.ones_like(span))
    r = torch.where(ok, r, torch.ones_like(r))
    return r.clamp(0.0, 1.0) if clamp else r


def normalise(
    x: Tensor, mode: str = "auto", *, lo: float | None = None, hi: float | None = None
) -> Tensor:
    """Map x to r in [0, 1] with a stateless mode: ``auto``, ``minmax`` or ``fixed`` (lo, hi).

    ``auto`` is the released rule: x itself if all of it lies in [0, 1], else one global min-max
    over the whole tensor (a constant tensor gives ones). ``minmax`` is per sample (all dims but
    0). ``fixed`` clamps (x - lo) / (hi - lo) to [0, 1]. ``running`` needs state: use
    :class:`BitPlaneEncoder`.
    """
    check_choice("normalise", "mode", mode, ("auto", "minmax", "fixed"))
    if mode == "auto":
        lo_t, hi_t = x.min(), x.max()
        inside = (lo_t >= 0) & (hi_t <= 1)
        return torch.where(inside, x, normalise_range(x, lo_t, hi_t, clamp=False))
    if mode == "minmax":
        flat = x.reshape(x.shape[0], -1) if x.ndim > 0 else x.reshape(1, 1)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1) if x.ndim > 0 else ()
        lo_t = flat.amin(dim=1).reshape(shape)
        hi_t = flat.amax(dim=1).reshape(shape)
        return normalise_range(x, lo_t, hi_t, clamp=False)
    lo_f, hi_f = _check_fixed_range("normalise", lo, hi)
    return normalise_range(x, lo_f, hi_f, clamp=True)


def _check_fixed_range(owner: str, lo: Any, hi: Any) -> tuple[float, float]:
    if lo is None or hi is None:
        raise SpikingConfigError(f"{owner}: normalize='fixed' needs lo and hi; give both")
    lo_f, hi_f = check_number(owner, "lo", lo), check_number(owner, "hi", hi)
    if not hi_f > lo_f:
        raise SpikingConfigError(f"{owner}: fixed range lo={lo_f} hi={hi_f}; need hi > lo")
    return lo_f, hi_f


def quantise(z: Tensor, mode: str = "round") -> Tensor:
    """Quantise z: ``none`` (as released), ``floor`` or ``round`` (half to even)."""
    check_choice("quantise", "mode", mode, QUANTIZE_MODES)
    if mode == "floor":
        return torch.floor(z)
    if mode == "round":
        return torch.round(z)
    return z


def bit_planes(z: Tensor, bits: int, order: str = "msb") -> Tensor:
    """All B planes of z at once, time-first: [B, *z.shape], standard ops only.

    P_k = floor(z / 2^k) mod 2 for k >= 1 and P_0 = z mod 2 (a real value in [0, 2) when z is
    not an integer). ``msb`` puts k = B-1 at t = 0, ``lsb`` puts k at t = k.
    """
    k = _broadcast_k(significance(bits, order, z.device), z.ndim, z.dtype)
    q = z.unsqueeze(0) * torch.pow(2.0, -k)  # exact (a power of two); Pow exports to ONNX
    lower = torch.where(k == 0, q, torch.floor(q))
    return lower - 2.0 * torch.floor(0.5 * q)


@dataclass(frozen=True)
class EncoderOptions:
    """Resolved, validated encoder options (see :func:`resolve_encoder_options`)."""

    bits: int
    order: str
    normalize: str
    quantize: str
    surrogate: str
    alpha: float | None
    offset: float
    rescale: str
    lo: float | None
    hi: float | None
    momentum: float
    compat: str | None
    gain: str = "raw"


def resolve_encoder_options(
    bits: int = 8,
    order: str | None = None,
    normalize: str | None = None,
    quantize: str | None = None,
    surrogate: str | None = None,
    alpha: float | None = None,
    offset: float | None = None,
    rescale: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    momentum: float = 0.1,
    compat: str | None = None,
    gain: str | None = None,
    *,
    owner: str = "BitPlaneEncoder",
) -> EncoderOptions:
    """Fill defaults (or the compat preset) and validate every option; one-line errors."""
    given = {
        "order": order,
        "normalize": normalize,
        "quantize": quantize,
        "surrogate": surrogate,
        "alpha": alpha,
        "offset": offset,
        "rescale": rescale,
        "gain": gain,
    }
    if compat is not None:
        check_choice(owner, "compat", compat, COMPAT_PRESETS)
        for key, preset in HAS8_RELEASED_ENCODER.items():
            value = given[key]
            if value is not None and value != preset:
                raise SpikingConfigError(
                    f"{owner}: {key}={value!r} contradicts compat={compat!r} (which sets "
                    f"{key}={preset!r}); drop {key} or compat"
                )
            given[key] = preset
    for key, default in ENCODER_DEFAULTS.items():
        if given[key] is None:
            given[key] = default
    bits = check_bits(owner, bits)
    check_choice(owner, "order", given["order"], ORDERS)
    check_choice(owner, "normalize", given["normalize"], NORMALIZE_MODES)
    check_choice(owner, "quantize", given["quantize"], QUANTIZE_MODES)
    name = check_choice(owner, "surrogate", given["surrogate"], ENCODER_SURROGATES)
    spec = ENCODER_SURROGATES[name]
    alpha_v = given["alpha"]
    if spec.default_alpha is None:
        if alpha_v is not None:
            raise SpikingConfigError(f"{owner}: surrogate {name!r} takes no alpha; drop alpha")
    elif alpha_v is None:
        alpha_v = spec.default_alpha
    elif name == "fourier":
        if isinstance(alpha_v, bool) or not (
            isinstance(alpha_v, (int, float)) and float(alpha_v).is_integer() and alpha_v >= 1
        ):
            raise SpikingConfigError(
                f"{owner}: fourier alpha={alpha_v!r} is the number of odd harmonics; "
                "give an integer >= 1"
            )
        alpha_v = int(alpha_v)
    else:
        alpha_v = check_number(owner, "alpha", alpha_v)
        if alpha_v == 0:
            raise SpikingConfigError(f"{owner}: alpha=0 gives no gradient; use e.g. -10")
    offset_v = check_number(owner, "offset", given["offset"])
    rescale_v = given["rescale"]
    if rescale_v is None:
        rescale_v = "none" if name == "ste" else "order-aware"
    check_choice(owner, "rescale", rescale_v, RESCALE_MODES)
    if given["normalize"] == "fixed":
        lo, hi = _check_fixed_range(owner, lo, hi)
    elif lo is not None or hi is not None:
        raise SpikingConfigError(
            f"{owner}: lo/hi only apply to normalize='fixed' (got {given['normalize']!r}); "
            "drop lo/hi or set normalize='fixed'"
        )
    momentum_v = check_number(owner, "momentum", momentum, positive=True)
    if momentum_v > 1:
        raise SpikingConfigError(f"{owner}: momentum={momentum_v} must lie in (0, 1]")
    check_choice(owner, "gain", given["gain"], GAIN_MODES)
    if given["gain"] == "unit" and _raw_mean_slope(bits, name, alpha_v, offset_v, rescale_v) == 0:
        raise SpikingConfigError(
            f"{owner}: gain='unit' cannot calibrate surrogate {name!r} (offset {offset_v}, "
            f"rescale {rescale_v!r}, bits {bits}): its mean slope over a period is 0; "
            "use fourier with offset != 0 or ste, or gain='raw'"
        )
    return EncoderOptions(
        bits=bits,
        order=given["order"],
        normalize=given["normalize"],
        quantize=given["quantize"],
        surrogate=name,
        alpha=alpha_v,
        offset=offset_v,
        rescale=rescale_v,
        lo=lo,
        hi=hi,
        momentum=momentum_v,
        compat=compat,
        gain=given["gain"],
    )


def _profile(bits: int, rescale: str) -> list[float]:
    """The rescale profile R_k for k = 0..B-1: F_k (order-aware) or 1 (none); exact floats."""
    if rescale == "none":
        return [1.0] * bits
    return [k * 2.0 ** (k - (bits - 1)) for k in range(bits)]


def _raw_mean_slope(bits: int, surrogate: str, alpha: Any, offset: float, rescale: str) -> float:
    """sum_k 2^k R_k m: (2^B - 1) times the period-mean d decode(encode(z)) / dz of the raw
    backward (m: the surrogate's period mean); 0 means there is no slope to calibrate."""
    m = ENCODER_SURROGATES[surrogate].period_mean(alpha, offset, bits)
    return sum(2.0**k * r_k * m for k, r_k in enumerate(_profile(bits, rescale)))


@lru_cache(maxsize=256)
def _unit_gain_scale(bits: int, surrogate: str, alpha: Any, offset: float, rescale: str) -> float:
    slope = sum(
        2.0**k * r_k * range_mean_derivative(surrogate, k, alpha, offset, bits)
        for k, r_k in enumerate(_profile(bits, rescale))
    )
    return 1.0 / slope


def gain_scale(opts: EncoderOptions) -> float:
    """The global factor of ``gain="unit"`` (1.0 for ``"raw"``); derivation in docs/spiking.md.

    The bit-plane decoder weights plane k by 2^k / (2^B - 1) and the backward gives plane k the
    slope R_k d_k(z) (R_k: the rescale profile). Averaged over the encoder's range, the slope of
    decode(encode(z)) is sum_k 2^k R_k mean(d_k) / (2^B - 1), against the true mean slope
    1 / (2^B - 1) of the quantiser chain: dividing by sum_k 2^k R_k mean(d_k) makes the two
    equal (unit gain in r, 1 / (hi - lo) in x) while keeping the surrogate's shape and R_k.
    """
    if opts.gain == "raw":
        return 1.0
    return _unit_gain_scale(opts.bits, opts.surrogate, opts.alpha, opts.offset, opts.rescale)


def plane_gradient_weights(opts: EncoderOptions, z: Tensor) -> Tensor:
    """[B, 1, ...] per-step factors: the rescale profile (F_k or ones) times :func:`gain_scale`,
    in z's dtype/device. ``gain="raw"`` gives exactly the profile (no extra multiply)."""
    k = _broadcast_k(significance(opts.bits, opts.order, z.device), z.ndim, z.dtype)
    w = torch.ones_like(k) if opts.rescale == "none" else k * torch.exp2(k - (opts.bits - 1))
    return w if opts.gain == "raw" else w * gain_scale(opts)


class _BitPlaneFunction(torch.autograd.Function):
    """Forward: planes of quantise(z). Backward: dL/dz = sum_k g_k F_k d_k(z) at unrounded z."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, opts: EncoderOptions) -> Tensor:
        ctx.save_for_backward(z)
        ctx.opts = opts
        return bit_planes(quantise(z, opts.quantize), opts.bits, opts.order)

    @staticmethod
    def backward(ctx: Any, grad_planes: Tensor) -> tuple[Tensor, None]:
        (z,) = ctx.saved_tensors
        opts: EncoderOptions = ctx.opts
        k = _broadcast_k(significance(opts.bits, opts.order, z.device), z.ndim, z.dtype)
        spec = ENCODER_SURROGATES[opts.surrogate]
        alpha = 0.0 if opts.alpha is None else opts.alpha
        if opts.compat is not None and opts.surrogate == "fourier":
            d = fourier_derivative_released(z.unsqueeze(0), k, alpha, opts.offset)
        else:
            d = spec.derivative(z.unsqueeze(0), k, alpha, opts.offset, opts.bits)
        d = d.mul_(plane_gradient_weights(opts, z)).mul_(grad_planes)
        return d.sum(0), None


def encode_normalised(r: Tensor, opts: EncoderOptions, *, export_mode: bool = False) -> Tensor:
    """Planes [B, *r.shape] of r in [0, 1] (z = (2^B - 1) r), with the surrogate backward when a
    gradient is wanted and not exporting; standard ops otherwise (same forward values)."""
    z = r * float(2**opts.bits - 1)
    if use_custom_backward(z, export_mode):
        # compat keeps the released evaluation order of the surrogate (bit-exact gradients)
        if opts.compat is None and use_fused(z, opts.bits):
            # same values; the per-plane weights still come from plane_gradient_weights
            cfg = encoder_kernel_config(opts, tuple(significance(opts.bits, opts.order).tolist()))
            planes = FusedBitPlane.apply(z, partial(plane_gradient_weights, opts), cfg)
        else:
            planes = _BitPlaneFunction.apply(z, opts)
        return planes if opts.quantize == "none" else mark_binary(planes)  # 0/1: one bit
    planes = bit_planes(quantise(z, opts.quantize), opts.bits, opts.order)
    if opts.quantize != "none" and compacting():  # an input without gradient (an image)
        mark_binary(planes)
    return planes


def encode(x: Tensor, *, export_mode: bool = False, **options: Any) -> Tensor:
    """Functional encoder for the stateless normalisations (auto, minmax, fixed).

    Keyword options are those of :class:`BitPlaneEncoder`; returns [B, *x.shape] in x.dtype.
    """
    opts = resolve_encoder_options(**options, owner="encode")
    if opts.normalize == "running":
        raise SpikingConfigError(
            "encode: normalize='running' keeps state; use BitPlaneEncoder or another mode"
        )
    xc = x.to(compute_dtype(x.dtype)) if x.is_floating_point() else x.to(torch.float32)
    r = normalise(xc, opts.normalize, lo=opts.lo, hi=opts.hi)
    out = encode_normalised(r, opts, export_mode=export_mode)
    return out.to(x.dtype) if x.is_floating_point() else out


# ------------------------------------------------------------------------------------- module


class BitPlaneEncoder(nn.Module):
    """x [N, ...] -> bit planes [T, N, ...] with T == bits, in x's dtype (METHOD.md 2-3).

    Options left as None take the defaults (order "msb", normalize "running", quantize
    "round", surrogate "fourier" with its default alpha, offset 0.5, rescale "order-aware"
    for smooth surrogates and "none" for "ste", gain "raw") or, with ``compat="has8-released"``,
    the released preset; an explicit option that contradicts the preset is an error.
    ``gain="unit"`` scales the surrogate backward so that decode(encode(x)) back-propagates its
    true mean slope (1 in r; see :func:`gain_scale`).
    Set ``export_mode = True`` to force standard ops (eval + no grad does so too).
    """

    def __init__(
        self,
        bits: int = 8,
        order: str | None = None,
        normalize: str | None = None,
        quantize: str | None = None,
        surrogate: str | None = None,
        alpha: float | None = None,
        offset: float | None = None,
        rescale: str | None = None,
        lo: float | None = None,
        hi: float | None = None,
        momentum: float = 0.1,
        compat: str | None = None,
        gain: str | None = None,
    ) -> None:
        super().__init__()
        self.options = resolve_encoder_options(
            bits, order, normalize, quantize, surrogate, alpha, offset, rescale, lo, hi,
            momentum, compat, gain,
        )  # fmt: skip
        self.export_mode = False
        if self.options.normalize == "running":
            self.register_buffer("running_min", torch.tensor(0.0))
            self.register_buffer("running_max", torch.tensor(1.0))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def bits(self) -> int:
        return self.options.bits

    @property
    def order(self) -> str:
        return self.options.order

    @property
    def time_steps(self) -> int:
        return self.options.bits

    def extra_repr(self) -> str:
        o = self.options
        parts = [
            f"bits={o.bits}",
            f"order={o.order!r}",
            f"normalize={o.normalize!r}",
            f"quantize={o.quantize!r}",
            f"surrogate={o.surrogate!r}",
            f"alpha={o.alpha}",
            f"offset={o.offset}",
            f"rescale={o.rescale!r}",
        ]
        if o.gain != "raw":
            parts.append(f"gain={o.gain!r}")
        if o.normalize == "fixed":
            parts.append(f"lo={o.lo}, hi={o.hi}")
        if o.compat:
            parts.append(f"compat={o.compat!r}")
        return ", ".join(parts)

    def _running(self, x: Tensor) -> Tensor:
        if not self.training:
            lo = self.running_min.to(x.dtype)
            hi = self.running_max.to(x.dtype)
            return normalise_range(x, lo, hi, clamp=True)
        lo, hi = x.min(), x.max()
        with torch.no_grad():
            m = self.options.momentum
            first = self.num_batches_tracked == 0
            for buf, batch in ((self.running_min, lo), (self.running_max, hi)):
                b = batch.detach().to(buf.dtype)
                buf.copy_(torch.where(first, b, (1.0 - m) * buf + m * b))
            self.num_batches_tracked.add_(1)
        return normalise_range(x, lo, hi, clamp=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.options
        xc = x.to(compute_dtype(x.dtype)) if x.is_floating_point() else x.to(torch.float32)
        if o.normalize == "running":
            r = self._running(xc)
        else:
            r = normalise(xc, o.normalize, lo=o.lo, hi=o.hi)
        out = encode_normalised(r, o, export_mode=self.export_mode)
        return out.to(x.dtype) if x.is_floating_point() else out
