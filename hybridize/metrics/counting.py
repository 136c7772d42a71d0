"""Operator-level counting of multiply-accumulates (MACs) and accumulates (ACs).

A :class:`OpCounter` is a ``TorchDispatchMode``: it sees every aten op with its real tensors,
so the counts do not depend on how modules are written (``nn.Linear``, ``F.conv2d``, ``@``,
einsum, attention). For each synaptic op (convolution, mm/addmm/bmm/baddbmm, linear, fused
attention) it counts:

- ``dense``: the MACs a dense processor executes (output elements x reduction length);
- when the caller asks for the spike split and one operand is binary ({0, 1} everywhere): the
  accumulates an event-driven processor executes, i.e. one AC per (non-zero input, weight)
  pair that reaches an output. For a linear that is ``nnz(input) * out_features``; for a
  convolution it is the sum of ``conv(input, ones_like(weight))`` with the op's own stride,
  padding, dilation and groups, so borders and padding are exact. Non-binary operands (bit
  planes of an unrounded encoder, SEW sums in {0, 1, 2}) are counted as dense MACs, for the
  whole op: a twin's op sees all T steps folded into its batch, so one real-valued step (the
  released encoder's lowest plane) makes every step of that op count as MACs.
- fused attention (scaled_dot_product_attention) is always dense, causal masks respected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


@dataclass
class OpTally:
    """Counts for one (region, role) bucket."""

    dense_macs: int = 0  # every synaptic op, counted densely
    macs: int = 0  # ops with non-binary inputs (dense count)
    acs: int = 0  # event-driven accumulates of ops with binary inputs
    binary_ops: int = 0
    ops: int = 0


def is_binary(x: torch.Tensor) -> bool:
    """True when every element is exactly 0 or 1 (bool tensors included)."""
    if x.dtype == torch.bool:
        return True
    if x.dtype.is_complex or x.numel() == 0:
        return False
    return bool(((x == 0) | (x == 1)).all())


def _nnz(x: torch.Tensor) -> int:
    return int(torch.count_nonzero(x))


def _conv(args: tuple, out: object, split: bool) -> tuple[int, int | None]:
    assert isinstance(out, torch.Tensor), "aten.convolution returns one tensor"
    x, w = args[0], args[1]
    stride, padding, dilation, transposed, output_padding, groups = args[3:9]
    kernel = math.prod(w.shape[2:])
    if transposed:  # weight [C_in, C_out/g, k...]: every input element fans out to C_out/g*k
        dense = x.numel() * w.shape[1] * kernel
        return dense, (_nnz(x) * w.shape[1] * kernel if split and is_binary(x) else None)
    dense = out.numel() * w.shape[1] * kernel
    if not (split and is_binary(x)):
        return dense, None
    # in float32 whatever the model's dtype: bf16 / fp16 would round per-output counts > 256
    ones = torch.ones_like(w, dtype=torch.float32)
    reach = aten.convolution.default(
        x.to(torch.float32), ones, None, stride, padding, dilation, False, output_padding, groups
    )
    return dense, int(round(float(reach.sum(dtype=torch.float64))))


def _matmul_pair(a: torch.Tensor, b: torch.Tensor, split: bool) -> tuple[int, int | None]:
    """a [..., n, k] @ b [..., k, m]."""
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    batch = a.numel() // (n * k) if n * k else 0
    dense = batch * n * k * m
    if not split:
        return dense, None
    if is_binary(a):
        return dense, _nnz(a) * m
    if is_binary(b):
        return dense, _nnz(b) * n
    return dense, None


def _linear(args: tuple, out: object, split: bool) -> tuple[int, int | None]:
    x, w = args[0], args[1]
    dense = x.numel() * w.shape[0]
    return dense, (_nnz(x) * w.shape[0] if split and is_binary(x) else None)


def _attention(args: tuple, out: object, split: bool, is_causal: bool) -> tuple[int, int | None]:
    """Fused attention, always dense: q k^T and the weighted sum of v over the (query, key)
    pairs it computes, all of them or, causal, query i with keys 0..i (torch's top-left mask)."""
    q, k, v = args[0], args[1], args[2]  # [..., L, E], [..., S, E], [..., S, Ev]
    lead = q.numel() // (q.shape[-2] * q.shape[-1])
    length, source = q.shape[-2], k.shape[-2]
    pairs = sum(min(i + 1, source) for i in range(length)) if is_causal else length * source
    return lead * pairs * (q.shape[-1] + v.shape[-1]), None


def _fused_attention(func: object) -> _Handler:
    """A handler that reads ``is_causal`` from wherever ``func``'s schema puts it."""
    names = [a.name for a in func._schema.arguments]  # type: ignore[attr-defined]

    def handler(args: tuple, kwargs: dict, out: object, split: bool) -> tuple[int, int | None]:
        given = dict(zip(names, args, strict=False)) | kwargs
        return _attention(args, out, split, bool(given.get("is_causal", False)))

    return handler


# (the op's arguments, its keyword arguments, its output, whether to split)
#   -> (dense MACs, ACs or None)
_Handler = Callable[[tuple, dict, object, bool], tuple[int, int | None]]

_ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
)
# read-only: the op packet -> how its synaptic ops are counted
HANDLERS: Mapping[object, _Handler] = MappingProxyType(
    {
        aten.convolution: lambda a, kw, o, s: _conv(a, o, s),
        aten.mm: lambda a, kw, o, s: _matmul_pair(a[0], a[1], s),
        aten.bmm: lambda a, kw, o, s: _matmul_pair(a[0], a[1], s),
        aten.addmm: lambda a, kw, o, s: _matmul_pair(a[1], a[2], s),
        aten.baddbmm: lambda a, kw, o, s: _matmul_pair(a[1], a[2], s),
        aten.linear: lambda a, kw, o, s: _linear(a, o, s),
        **{
            getattr(aten, n): _fused_attention(getattr(aten, n).default)
            for n in _ATTENTION_OPS
            if hasattr(aten, n)
        },
    }
)


class OpCounter(TorchDispatchMode):
    """Counts synaptic ops into buckets chosen by ``where()`` at the time of each op.

    ``where`` returns ``(bucket_key, split)``: the key the op is added to and whether to split it
    into ACs / MACs (only twins need the split; ANN ops are always dense MACs).
    """

    def __init__(self, where: Callable[[], tuple[tuple[str, str], bool]]) -> None:
        super().__init__()
        self.where = where
        self.tallies: dict[tuple[str, str], OpTally] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        handler = HANDLERS.get(func.overloadpacket)
        if handler is not None:
            key, split = self.where()
            dense, acs = handler(args, kwargs or {}, out, split)
            tally = self.tallies.setdefault(key, OpTally())
            tally.ops += 1
            tally.dense_macs += dense
            if acs is None:
                tally.macs += dense
            else:
                tally.acs += acs
                tally.binary_ops += 1
        return out
