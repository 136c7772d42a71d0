"""Element order of the fused kernels: a tensor's own memory order, so a channels-last tensor
goes through the element-wise kernels without a copy into NCHW order and comes out channels-last.

The kernels see flat views ([M], or [T, M] with time outermost); :class:`MemoryOrder` makes such
a view of a dense tensor in the order its elements lie in memory and gives a flat result back
the tensor's shape and strides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class MemoryOrder:
    """The dims of a shape from outermost to innermost in memory (a permutation)."""

    perm: tuple[int, ...]

    @property
    def identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm)))

    def flat(self, x: Tensor, lead: int = 0) -> Tensor:
        """x with its dims in this order, flattened after the first ``lead`` of them (a view
        when x lies in memory this way; else a copy in this order)."""
        y = x if self.identity else x.permute(self.perm)
        return y.reshape(*y.shape[:lead], -1)

    def restore(self, flat: Tensor, shape: tuple[int, ...], extra: int = 0) -> Tensor:
        """A flat result in this order as ``shape`` (``extra`` leading dims of flat's are kept
        before it): the same strides as a dense tensor of ``shape`` in this order."""
        permuted = [shape[d] for d in self.perm]
        y = flat.reshape((*flat.shape[:extra], *permuted))  # a tuple: () for a 0-d shape
        if self.identity:
            return y
        inverse = [0] * len(self.perm)
        for i, d in enumerate(self.perm):
            inverse[d] = i
        return y.permute(*range(extra), *(extra + i for i in inverse))

    def inner(self) -> MemoryOrder:
        """The order of the dims after the first (outermost) one, numbered from 0."""
        assert self.perm[0] == 0, "the first dim must be outermost"
        return MemoryOrder(tuple(d - 1 for d in self.perm[1:]))

    def channel_view(self, shape: tuple[int, ...], steps: int) -> tuple[int, int, int, int]:
        """(T, pre, C, post) of a [steps * N, C, ...] tensor flattened in this order, so that a
        per-channel [C, 1] tensor broadcasts against it (NCHW: post = H W; channels-last:
        pre = N H W, post = 1)."""
        where = self.perm.index(1)
        sizes = [shape[d] for d in self.perm]
        pre = math.prod(sizes[:where]) // steps
        return steps, pre, shape[1], math.prod(sizes[where + 1 :])


def dense_order(x: Tensor, outer: int = 1) -> MemoryOrder | None:
    """The memory order of ``x`` when it is dense and non-overlapping with its first ``outer``
    dims outermost, in that order (time or batch stays outside); else None."""
    if x.is_contiguous():
        return MemoryOrder(tuple(range(x.ndim)))
    # stable sort: among equal strides (size-1 dims) the logical order is kept
    strides = x.stride()
    perm = tuple(sorted(range(x.ndim), key=lambda d: -strides[d]))
    if perm[:outer] != tuple(range(outer)) or not x.permute(perm).is_contiguous():
        return None
    return MemoryOrder(perm)


def memory_order(x: Tensor, outer: int = 1) -> MemoryOrder:
    """:func:`dense_order`, or row-major (:meth:`MemoryOrder.flat` then copies) when x has no
    dense order with those dims outside."""
    return dense_order(x, outer) or MemoryOrder(tuple(range(x.ndim)))
