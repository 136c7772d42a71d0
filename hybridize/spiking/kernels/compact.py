"""One byte per spike in what autograd saves: the layers after an encoder or a LIF (a conv, a
linear) save their 0/1 input for backward; inside :func:`compact_binary_saves` those saves are
kept as uint8 and widened back in backward (exact: the values are 0 and 1).

Tensors are marked binary by the module that makes them (:func:`mark_binary`, an attribute on
the output tensor); views of a marked tensor count too. Nothing outlives the ``with`` block.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch
from torch import Tensor

from hybridize.spiking.kernels._select import _compiling, kernel_backend

_MARK = "_hybridize_binary"
_BYTES = "_hybridize_binary_bytes"  # a uint8 copy its maker already holds (no second copy)
F = TypeVar("F", bound=Callable[..., Any])


def mark_binary(t: Tensor, as_bytes: Tensor | None = None) -> Tensor:
    """Mark ``t`` (all of whose values are 0 or 1) as storable in one byte; returns ``t``.
    ``as_bytes``: t as uint8 (same shape, contiguous), when its maker keeps one anyway."""
    setattr(t, _MARK, True)
    if as_bytes is not None:
        setattr(t, _BYTES, as_bytes)
    base = t._base  # views of t (a flatten, a reshape) have the root as their _base
    if base is not None and base.numel() == t.numel():
        setattr(base, _MARK, True)
    return t


def _same(t: Any) -> Any:
    return t


def _is_binary(t: Tensor) -> bool:
    return getattr(t, _MARK, False) is True or (
        t._base is not None and getattr(t._base, _MARK, False) is True
    )


@contextmanager
def _compacting() -> Iterator[None]:
    # id(tensor) -> (weak reference to it, its uint8 copy); weak: the float tensor is freed as
    # soon as the layers that use it are done
    packed: dict[int, tuple[weakref.ref, Tensor]] = {}

    # hooks already in force (a user's offloading, a memory count) still see what is stored
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    outer = top(False) if top is not None else None
    outer_pack, outer_unpack = outer if outer is not None else (_same, _same)

    def pack(t: Tensor) -> Any:
        if not (t.is_floating_point() and _is_binary(t)):
            return (outer_pack(t), None)
        # one copy per storage however many layers save it, through whichever views
        base = t._base
        root = base if base is not None and base.is_contiguous() and _is_binary(base) else t
        hit = packed.get(id(root))
        if hit is None or hit[0]() is not root:
            small = getattr(root, _BYTES, None)
            if small is None or small.shape != root.shape or not root.is_contiguous():
                small = root.to(torch.uint8)
            hit = (weakref.ref(root), small)
            packed[id(root)] = hit
        small = hit[1]
        if root is not t:
            offset = t.storage_offset() - root.storage_offset()
            small = small.as_strided(t.shape, t.stride(), small.storage_offset() + offset)
        return (outer_pack(small), t.dtype)

    def unpack(p: tuple[Any, torch.dtype | None]) -> Tensor:
        t = outer_unpack(p[0])
        return t if p[1] is None else t.to(p[1])

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
    packed.clear()


def compact_binary_saves() -> Any:
    """A context in which saved 0/1 tensors marked by :func:`mark_binary` take one byte each;
    a no-op without grad, under torch.compile or export, or with the eager kernel backend."""
    if not torch.is_grad_enabled() or _compiling() or kernel_backend() == "eager":
        return nullcontext()
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return nullcontext()
    return _compacting()


def compacting_binary_saves(forward: F) -> F:
    """Decorator: run a module's forward inside :func:`compact_binary_saves`."""

    @functools.wraps(forward)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with compact_binary_saves():
            return forward(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
