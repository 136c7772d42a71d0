"""Decoders (METHOD.md 5): bit-plane weighted sum over time, or the rate (mean over time)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybridize.spiking._options import (
    SpikingConfigError,
    check_bits,
    check_choice,
    compute_dtype,
)
from hybridize.spiking.encoder import COMPAT_PRESETS, ORDERS, significance

DECODER_KINDS = ("bitplane", "rate")


def decoder_weights(
    bits: int, order: str = "msb", *, compat: str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """w_t = 2^(significance of step t) / (2^B - 1); compat has8-released: always MSB first."""
    k = significance(bits, "msb" if compat is not None else order).to(dtype)
    return torch.pow(2.0, k) / float(2**bits - 1)  # Pow, not exp2: exportable to ONNX


def decode(
    s: Tensor,
    bits: int | None = None,
    order: str = "msb",
    kind: str = "bitplane",
    compat: str | None = None,
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
    w = decoder_weights(b, order, compat=compat, dtype=ct).to(s.device)
    return torch.tensordot(w, s.to(ct), dims=([0], [0])).to(s.dtype)


class BitPlaneDecoder(nn.Module):
    """[T, N, ...] -> [N, ...]. ``kind="bitplane"`` weights step t by 2^(its significance) /
    (2^B - 1) for the given order; ``compat="has8-released"`` fixes MSB-first weights whatever
    the encoder order (``order`` may then only be omitted or "msb"). ``kind="rate"`` averages.
    The decoded value is not mapped back to the input's range.
    """

    def __init__(
        self,
        bits: int = 8,
        order: str | None = None,
        kind: str = "bitplane",
        compat: str | None = None,
    ) -> None:
        super().__init__()
        self.bits = check_bits("BitPlaneDecoder", bits)
        if compat is not None:
            check_choice("BitPlaneDecoder", "compat", compat, COMPAT_PRESETS)
            if order not in (None, "msb"):
                raise SpikingConfigError(
                    f"BitPlaneDecoder: order={order!r} contradicts compat={compat!r} (fixed "
                    "MSB-first weights); drop order or compat"
                )
        self.order = check_choice("BitPlaneDecoder", "order", order or "msb", ORDERS)
        self.kind = check_choice("BitPlaneDecoder", "kind", kind, DECODER_KINDS)
        self.compat = compat

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
