"""Bit-plane encoder (docs/method.md 2-3): normalize -> scale -> quantize -> bit planes, with the
surrogate backward of section 3 as a custom autograd.Function that saves only z (the fused
kernels, where they run, save x and its range). Its options and their rules live in
:mod:`hybridize.spiking.options`.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from hybridize.errors import SpikingConfigError
from hybridize.spiking._dispatch import compute_dtype, exporting, use_custom_backward
from hybridize.spiking.arithmetic import normalize_range as normalize_range  # public here
from hybridize.spiking.arithmetic import quantize as quantize  # public here too
from hybridize.spiking.kernels import (
    EncoderKernelConfig,
    FusedBitPlane,
    FusedRangeBitPlane,
    RangeConfig,
    compacting,
    encoder_kernel_config,
    fused_planes,
    fuses_range,
    mark_binary,
    range_planes,
    use_fused,
)
from hybridize.spiking.options import (
    DEFAULT_ENCODER,
    NORMALIZE_MODES,
    CompatPreset,
    EncoderOptions,
    EncoderSurrogateName,
    GainMode,
    NormalizeMode,
    Order,
    QuantizeMode,
    RescaleMode,
    check_choice,
    check_fixed_range,
    option_property,
    rescale_profile,
    resolve_encoder,
)
from hybridize.spiking.surrogates import (
    ENCODER_SURROGATES,
    fourier_derivative_released,
    range_mean_derivative,
)

# the modes that need no state (running keeps a range across batches)
STATELESS_NORMALIZE_MODES = tuple(m for m in NORMALIZE_MODES if m != "running")


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


class InputRange(NamedTuple):
    """The range a normalisation maps to [0, 1]: r = (x - lo) / (hi - lo)."""

    lo: Tensor  # a scalar, or [N, 1, ...] per sample
    hi: Tensor
    how: RangeConfig  # clamped, taken from the data, per sample


def input_range(
    x: Tensor, mode: str, *, lo: float | None = None, hi: float | None = None
) -> InputRange:
    """The range of a stateless mode other than ``auto``: ``minmax`` (x's own, per sample, with
    its gradient) or ``fixed`` (lo, hi; clamped)."""
    if mode == "minmax":
        flat = x.reshape(x.shape[0], -1) if x.ndim > 0 else x.reshape(1, 1)
        shape = (x.shape[0],) + (1,) * (x.ndim - 1) if x.ndim > 0 else ()
        lo_t = flat.amin(dim=1).reshape(shape)
        hi_t = flat.amax(dim=1).reshape(shape)
        return InputRange(lo_t, hi_t, RangeConfig(clamp=False, from_data=True, per_sample=True))
    lo_f, hi_f = check_fixed_range("normalize", lo, hi)
    return InputRange(
        torch.tensor(lo_f, dtype=x.dtype, device=x.device),
        torch.tensor(hi_f, dtype=x.dtype, device=x.device),
        RangeConfig(clamp=True, from_data=False, per_sample=False),
    )


def normalize(
    x: Tensor, mode: str = "auto", *, lo: float | None = None, hi: float | None = None
) -> Tensor:
    """Map x to r in [0, 1] with a stateless mode: ``auto``, ``minmax`` or ``fixed`` (lo, hi).

    ``auto`` is the released rule: x itself if all of it lies in [0, 1], else one global min-max
    over the whole tensor (a constant tensor gives ones). ``minmax`` is per sample (all dims but
    0). ``fixed`` clamps (x - lo) / (hi - lo) to [0, 1]. ``running`` needs state: use
    :class:`BitPlaneEncoder`.
    """
    check_choice("normalize", "mode", mode, STATELESS_NORMALIZE_MODES)
    if mode == "auto":
        lo_t, hi_t = x.min(), x.max()
        inside = (lo_t >= 0) & (hi_t <= 1)
        return torch.where(inside, x, normalize_range(x, lo_t, hi_t, clamp=False))
    rng = input_range(x, mode, lo=lo, hi=hi)
    return normalize_range(x, rng.lo, rng.hi, clamp=rng.how.clamp)


def bit_planes(z: Tensor, bits: int, order: str = "msb") -> Tensor:
    """All B planes of z at once, time-first: [B, *z.shape], standard ops only.

    P_k = floor(z / 2^k) mod 2 for k >= 1 and P_0 = z mod 2 (a real value in [0, 2) when z is
    not an integer). ``msb`` puts k = B-1 at t = 0, ``lsb`` puts k at t = k.
    """
    k = _broadcast_k(significance(bits, order, z.device), z.ndim, z.dtype)
    q = z.unsqueeze(0) * torch.pow(2.0, -k)  # exact (a power of two); Pow exports to ONNX
    lower = torch.where(k == 0, q, torch.floor(q))
    return lower - 2.0 * torch.floor(0.5 * q)


@lru_cache(maxsize=256)
def _unit_gain_scale(bits: int, surrogate: str, alpha: Any, offset: float, rescale: str) -> float:
    slope = sum(
        2.0**k * r_k * range_mean_derivative(surrogate, k, alpha, offset, bits)
        for k, r_k in enumerate(rescale_profile(bits, rescale))
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
    """Forward: planes of quantize(z). Backward: dL/dz = sum_k g_k F_k d_k(z) at unrounded z."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, opts: EncoderOptions) -> Tensor:
        ctx.save_for_backward(z)
        ctx.opts = opts
        return bit_planes(quantize(z, opts.quantize), opts.bits, opts.order)

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


def _config(opts: EncoderOptions) -> EncoderKernelConfig:
    """The fused kernels' configuration of ``opts`` (one build per configuration)."""
    return encoder_kernel_config(opts, tuple(significance(opts.bits, opts.order).tolist()))


def encode_normalized(r: Tensor, opts: EncoderOptions, *, export_mode: bool = False) -> Tensor:
    """Planes [B, *r.shape] of r in [0, 1] (z = (2^B - 1) r), with the surrogate backward when a
    gradient is wanted and not exporting; without a gradient the fused forward kernel where the
    kernel backend selects it; standard ops in export mode (same forward values everywhere)."""
    z = r * float(2**opts.bits - 1)
    if use_custom_backward(z, export_mode):
        # compat keeps the released evaluation order of the surrogate (bit-exact gradients)
        if opts.compat is None and use_fused(z, opts.bits):
            # same values; the per-plane weights still come from plane_gradient_weights
            planes = FusedBitPlane.apply(z, partial(plane_gradient_weights, opts), _config(opts))
        else:
            planes = _BitPlaneFunction.apply(z, opts)
        return planes if opts.quantize == "none" else mark_binary(planes)  # 0/1: one bit
    if not exporting(export_mode) and use_fused(z, opts.bits):
        planes = fused_planes(z, _config(opts))  # eval, or an image: same planes, one pass
    else:
        planes = bit_planes(quantize(z, opts.quantize), opts.bits, opts.order)
    if opts.quantize != "none" and compacting():  # an input without gradient (an image)
        mark_binary(planes)
    return planes


def encode_range(
    x: Tensor, rng: InputRange, opts: EncoderOptions, *, export_mode: bool = False
) -> Tensor:
    """Planes [B, *x.shape] of normalize_range(x, rng.lo, rng.hi) (see :func:`encode_normalized`);
    on the CPU, where the kernel backend selects the fused kernels, the normalisation runs
    inside them (forward and backward: same values, a dozen eager ops fewer)."""
    fused = (
        opts.compat is None
        and not exporting(export_mode)
        and fuses_range(x, rng.how)
        and use_fused(x, opts.bits)
    )
    if not fused:
        r = normalize_range(x, rng.lo, rng.hi, clamp=rng.how.clamp)
        return encode_normalized(r, opts, export_mode=export_mode)
    scale = float(2**opts.bits - 1)
    if use_custom_backward(x, export_mode):
        # the range's gradient is the kernel's: lo and hi go in detached (no min / max node)
        lo, hi = rng.lo.detach(), rng.hi.detach()
        weights_fn = partial(plane_gradient_weights, opts)
        planes = FusedRangeBitPlane.apply(x, lo, hi, weights_fn, _config(opts), scale, rng.how)
        return planes if opts.quantize == "none" else mark_binary(planes)
    planes = range_planes(x, rng.lo, rng.hi, _config(opts), scale, rng.how)
    if opts.quantize != "none" and compacting():  # an input without gradient (an image)
        mark_binary(planes)
    return planes


def encode(x: Tensor, *, export_mode: bool = False, **options: Any) -> Tensor:
    """Functional encoder for the stateless normalizations (auto, minmax, fixed).

    Keyword options are those of :class:`BitPlaneEncoder`; returns [B, *x.shape] in x.dtype for
    a floating-point x, float32 for an integer one (planes of 0 and 1).
    """
    opts = resolve_encoder("encode", **options)
    if opts.normalize == "running":
        raise SpikingConfigError(
            "encode: normalize='running' keeps state; use BitPlaneEncoder or another mode"
        )
    xc = x.to(compute_dtype(x.dtype)) if x.is_floating_point() else x.to(torch.float32)
    if opts.normalize == "auto":
        out = encode_normalized(normalize(xc, "auto"), opts, export_mode=export_mode)
    else:
        rng = input_range(xc, opts.normalize, lo=opts.lo, hi=opts.hi)
        out = encode_range(xc, rng, opts, export_mode=export_mode)
    return out.to(x.dtype) if x.is_floating_point() else out


# ------------------------------------------------------------------------------------- module


class BitPlaneEncoder(nn.Module):
    """x [N, ...] -> bit planes [T, N, ...] with T == bits, in x's dtype (docs/method.md 2-3).

    Options left as None take :class:`~hybridize.spiking.options.EncoderOptions`' defaults (the
    surrogate's alpha and rescale) or, with ``compat="has8-released"``, the released preset; an
    explicit option that contradicts the preset is an error. ``options`` holds them resolved.
    ``gain="unit"`` scales the surrogate backward so that decode(encode(x)) back-propagates its
    true mean slope (1 in r; see :func:`gain_scale`).
    Set ``export_mode = True`` to force standard ops (without a gradient the planes otherwise
    come from the fused forward kernel where the kernel backend selects it).
    """

    running_min: Tensor  # buffers of normalize="running"
    running_max: Tensor
    num_batches_tracked: Tensor

    def __init__(
        self,
        bits: int = DEFAULT_ENCODER.bits,
        order: Order | None = None,
        normalize: NormalizeMode | None = None,
        quantize: QuantizeMode | None = None,
        surrogate: EncoderSurrogateName | None = None,
        alpha: float | None = None,
        offset: float | None = None,
        rescale: RescaleMode | None = None,
        lo: float | None = None,
        hi: float | None = None,
        momentum: float = DEFAULT_ENCODER.momentum,
        compat: CompatPreset | None = None,
        gain: GainMode | None = None,
    ) -> None:
        super().__init__()
        self.options = resolve_encoder(
            "BitPlaneEncoder", bits=bits, order=order, normalize=normalize, quantize=quantize,
            surrogate=surrogate, alpha=alpha, offset=offset, rescale=rescale, lo=lo, hi=hi,
            momentum=momentum, compat=compat, gain=gain,
        )  # fmt: skip
        self.export_mode = False
        if self.options.normalize == "running":
            self.register_buffer("running_min", torch.tensor(0.0))
            self.register_buffer("running_max", torch.tensor(1.0))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    bits = option_property("bits")
    order = option_property("order")

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

    def _running_range(self, x: Tensor) -> InputRange:
        """Eval: the running range, clamped. Training: the batch's own (with its gradient),
        which also moves the running range."""
        if not self.training:
            how = RangeConfig(clamp=True, from_data=False, per_sample=False)
            return InputRange(self.running_min.to(x.dtype), self.running_max.to(x.dtype), how)
        lo, hi = x.min(), x.max()
        with torch.no_grad():
            m = self.options.momentum
            first = self.num_batches_tracked == 0
            for buf, batch in ((self.running_min, lo), (self.running_max, hi)):
                b = batch.detach().to(buf.dtype)
                buf.copy_(torch.where(first, b, (1.0 - m) * buf + m * b))
            self.num_batches_tracked.add_(1)
        return InputRange(lo, hi, RangeConfig(clamp=False, from_data=True, per_sample=False))

    def forward(self, x: Tensor) -> Tensor:
        o = self.options
        xc = x.to(compute_dtype(x.dtype)) if x.is_floating_point() else x.to(torch.float32)
        if o.normalize == "auto":
            out = encode_normalized(normalize(xc, "auto"), o, export_mode=self.export_mode)
        else:
            rng = (
                self._running_range(xc)
                if o.normalize == "running"
                else input_range(xc, o.normalize, lo=o.lo, hi=o.hi)
            )
            out = encode_range(xc, rng, o, export_mode=self.export_mode)
        return out.to(x.dtype) if x.is_floating_point() else out
