"""Decoders (docs/method.md 5): bit-plane weighted sum over time, or the rate (mean over time)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybridize.errors import SpikingConfigError
from hybridize.spiking._dispatch import compute_dtype
from hybridize.spiking.encoder import significance
from hybridize.spiking.kernels.layout import memory_order
from hybridize.spiking.options import (
    COMPAT_PRESETS,
    DECODER_KINDS,
    DEFAULT_DECODER,
    CompatPreset,
    DecoderKind,
    Order,
    check_choice,
    option_property,
    resolve_decoder,
)


def decoder_weights(
    bits: int,
    order: Order = DEFAULT_DECODER.order,
    *,
    compat: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """w_t = 2^(significance of step t) / (2^B - 1); compat has8-released: always MSB first.

    (The compat decoder does not multiply by these: it sums with the integer weights
    2^(significance) and divides once, see :func:`decode`.)
    """
    k = significance(bits, "msb" if compat is not None else order).to(dtype)
    return torch.pow(2.0, k) / float(2**bits - 1)  # Pow, not exp2: exportable to ONNX


def _decode_released(s: Tensor, bits: int) -> Tensor:
    """The released decoder: (sum_t s_t 2^(B-1-t)) / (2^B - 1), summed over dim 0 before the one
    division. The sum is exact for integer spike counts, so the result is the correctly rounded
    quotient, which pre-divided weights (one rounding per weight) miss by an ulp at times."""
    k = significance(bits, "msb", s.device).to(s.dtype)
    w = torch.pow(2.0, k).reshape(-1, *([1] * (s.ndim - 1)))
    return (s * w).sum(0) / float(2**bits - 1)


def decode(
    s: Tensor,
    bits: int | None = None,
    order: Order = DEFAULT_DECODER.order,
    kind: DecoderKind = DEFAULT_DECODER.kind,
    compat: CompatPreset | None = None,
) -> Tensor:
    """s [T, N, ...] -> [N, ...]: sum_t w_t s_t (bitplane, T == bits) or the mean over t (rate)."""
    check_choice("decode", "kind", kind, DECODER_KINDS)
    if s.ndim < 1:
        raise SpikingConfigError("decode: got a scalar; give a time-first tensor [T, N, ...]")
    if kind == "rate":
        return s.mean(0)
    b = s.shape[0] if bits is None else bits
    if s.shape[0] != b:
        raise SpikingConfigError(
            f"decode: input has T={s.shape[0]} steps but bits={b}; they must match"
        )
    ct = compute_dtype(s.dtype)
    if compat is not None:
        check_choice("decode", "compat", compat, COMPAT_PRESETS)
        return _decode_released(s.to(ct), b).to(s.dtype)
    w = decoder_weights(b, order, compat=compat, dtype=ct).to(s.device)
    layout = memory_order(s)  # summed in memory order: channels-last spikes decode channels-last
    decoded = torch.tensordot(w, layout.flat(s.to(ct), lead=1), dims=([0], [0]))
    return layout.inner().restore(decoded, tuple(s.shape[1:])).to(s.dtype)


class BitPlaneDecoder(nn.Module):
    """[T, N, ...] -> [N, ...]. ``kind="bitplane"`` weights step t by 2^(its significance) /
    (2^B - 1) for the given order; ``compat="has8-released"`` fixes MSB-first weights whatever
    the encoder order (``order`` may then only be omitted or "msb") and, as released, sums
    s_t 2^(B-1-t) before dividing by 2^B - 1 once. ``kind="rate"`` averages.
    The decoded value is not mapped back to the input's range.
    """

    def __init__(
        self,
        bits: int = DEFAULT_DECODER.bits,
        order: Order | None = None,
        kind: DecoderKind = DEFAULT_DECODER.kind,
        compat: CompatPreset | None = None,
    ) -> None:
        super().__init__()
        self.options = resolve_decoder(
            "BitPlaneDecoder", bits=bits, order=order, kind=kind, compat=compat
        )

    bits = option_property("bits")
    order = option_property("order")
    kind = option_property("kind")
    compat = option_property("compat")

    @property
    def time_steps(self) -> int:
        return self.bits

    def extra_repr(self) -> str:
        extra = f", compat={self.compat!r}" if self.compat else ""
        return f"bits={self.bits}, order={self.order!r}, kind={self.kind!r}{extra}"

    def forward(self, s: Tensor) -> Tensor:
        if self.kind == "bitplane" and (s.ndim < 1 or s.shape[0] != self.bits):
            raise SpikingConfigError(
                f"BitPlaneDecoder: input of shape {tuple(s.shape)} does not have T={self.bits} "
                "steps first; match the encoder's bits"
            )
        return decode(s, self.bits, self.order, self.kind, self.compat)
