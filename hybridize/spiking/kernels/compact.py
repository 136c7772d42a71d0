"""One bit per spike in what autograd saves: the layers after an encoder or a LIF (a conv, a
linear) save their 0/1 input for backward; inside :func:`compact_binary_saves` those saves are
kept packed eight to a byte and widened back in backward (exact: the values are 0 and 1).

Tensors are marked binary by the module that makes them (:func:`mark_binary`, an attribute on
the output tensor); views of a marked tensor count too, and share one packed copy. Nothing
outlives the ``with`` block.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridize.spiking.kernels._select import _compiling, kernel_backend, run_kernel, use_fused
from hybridize.spiking.kernels.layout import MemoryOrder, dense_order

_MARK = "_hybridize_binary"
Fn = TypeVar("Fn", bound=Callable[..., Any])
_active = [0]  # depth of compacting contexts in force (saves inside them are packed)


def mark_binary(t: Tensor) -> Tensor:
    """Mark ``t`` (all of whose values are 0 or 1) as storable in one bit; returns ``t``.

    The mark holds the tensor's version counter: an in-place change afterwards (a residual
    ``out.add_(x)`` making values of 2) voids it, so such a tensor is saved as it is."""
    if t.is_inference():  # no version counter, and nothing is saved for backward anyway
        return t
    setattr(t, _MARK, t._version)
    base = t._base  # views of t (a flatten, a reshape) have the root as their _base
    if base is not None and base.numel() == t.numel():
        setattr(base, _MARK, base._version)  # views share their base's counter
    return t


def compacting() -> bool:
    """True inside :func:`compact_binary_saves` (marked saves are packed to bits there)."""
    return _active[0] > 0


def pack_bits(flat: Tensor) -> Tensor:
    """0/1 values [8 K] (any dtype) -> [K] uint8, element 8 k + i in bit i of byte k."""
    b = flat.reshape(-1, 8).to(torch.uint8)
    out = b[:, 0]
    for i in range(1, 8):
        out = out | (b[:, i] << i)
    return out


def unpack_bits(bits: Tensor, dtype: torch.dtype) -> Tensor:
    """[K] uint8 from :func:`pack_bits` -> [8 K] 0/1 values in ``dtype``."""
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(1) >> shifts) & 1).reshape(-1).to(dtype)


def _same(t: Any) -> Any:
    return t


def _marked(t: Tensor) -> bool:
    mark = getattr(t, _MARK, None)
    return mark is not None and mark == t._version


def _is_binary(t: Tensor) -> bool:
    """Marked by :func:`mark_binary` (itself or its base) and not changed in place since."""
    return _marked(t) or (t._base is not None and _marked(t._base))


def _pack_root(root: Tensor, order: MemoryOrder, fused: bool) -> Tensor:
    flat = order.flat(root)  # in memory order: a view, also for channels-last
    if flat.numel() % 8:
        flat = F.pad(flat, (0, 8 - flat.numel() % 8))
    return run_kernel(("pack_bits",), pack_bits, flat) if fused else pack_bits(flat)


def _unpack_root(
    bits: Tensor, dtype: torch.dtype, shape: torch.Size, order: MemoryOrder, fused: bool
) -> Tensor:
    """The root back from its bits, with the root's strides (views are rebuilt on it)."""
    if fused:
        flat = run_kernel(("unpack_bits", dtype), unpack_bits, bits, dtype)
    else:
        flat = unpack_bits(bits, dtype)
    return order.restore(flat[: shape.numel()], tuple(shape))


@contextmanager
def _compacting() -> Iterator[None]:
    # (id, version) of a root tensor -> (weak reference to it, its packed bits); weak: the
    # float tensor is freed as soon as the layers that use it are done
    packed: dict[tuple[int, int], tuple[weakref.ref, Tensor]] = {}

    # hooks already in force (a user's offloading, a memory count) still see what is stored
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    outer = top(False) if top is not None else None
    outer_pack, outer_unpack = outer if outer is not None else (_same, _same)

    def pack(t: Tensor) -> Any:
        if not (t.is_floating_point() and _is_binary(t)):
            return (outer_pack(t), None)
        base = t._base
        root = base if base is not None and _is_binary(base) else t
        order = dense_order(root, outer=0)
        if order is None:  # no flat order to pack by: one byte per value
            return (outer_pack(t.to(torch.uint8)), t.dtype)
        # one packed copy per root however many layers save it, through whichever views
        fused = use_fused(root)  # compiled packing where the kernels run compiled
        key = (id(root), root._version)
        hit = packed.get(key)
        if hit is None or hit[0]() is not root:
            hit = (weakref.ref(root), _pack_root(root, order, fused))
            packed[key] = hit
        view = None
        if t is not root:
            view = (t.shape, t.stride(), t.storage_offset() - root.storage_offset())
        return (outer_pack(hit[1]), (t.dtype, root.shape, order, view, fused))

    def unpack(p: tuple[Any, Any]) -> Tensor:
        stored, how = outer_unpack(p[0]), p[1]
        if how is None:
            return stored
        if isinstance(how, torch.dtype):
            return stored.to(how)
        dtype, shape, order, view, fused = how
        full = _unpack_root(stored, dtype, shape, order, fused)
        return full if view is None else full.as_strided(*view)

    _active[0] += 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        _active[0] -= 1
        packed.clear()


def compact_binary_saves() -> Any:
    """A context in which saved 0/1 tensors marked by :func:`mark_binary` take one bit each;
    a no-op without grad, under torch.compile or export, or with the eager kernel backend."""
    if not torch.is_grad_enabled() or _compiling() or kernel_backend() == "eager":
        return nullcontext()
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return nullcontext()
    return _compacting()


def compacting_binary_saves(forward: Fn) -> Fn:
    """Decorator: run a module's forward inside :func:`compact_binary_saves`."""

    @functools.wraps(forward)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with compact_binary_saves():
            return forward(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
