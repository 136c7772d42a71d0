"""Divisions by data: does a region's forward divide by a value computed from its input?

A twin sees spike trains where its ANN saw real values: the encoded bit planes at its input and
a LIF in place of each activation. Sums and products of sparse 0/1 trains are exactly 0 most of
the time, so a divisor computed from them sits at its epsilon (linear attention's normaliser
``q @ sum(k)``, a hand-written norm's ``sqrt(var + eps)``), while the surrogate gradient still
flows through the zeros: the quotient is 0 in the forward and ``1 / eps`` in the backward
(docs/conversion.md, "Regions that divide by their input"). Such a region gets no twin.

The check runs a copy of the ANN region once on "meta" tensors (shapes only, no arithmetic,
no memory) under a torch function mode that follows which tensors are computed from the first
input, and records every division whose divisor is one of them: ``/``, ``div``,
``true_divide``, ``reciprocal``, ``rsqrt`` (a division by ``sqrt``). Fused ops (``softmax``,
``layer_norm``, ``rms_norm``, ``batch_norm``, ``normalize``) are single calls here, not
divisions, and so are timm's written-out forms of the channel norms (``rms_norm2d``) and of
FilterResponseNorm's statistic (``inv_instance_rms``); so are
divisions by constants, parameters or shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from hybridize._util import first_line
from hybridize.conversion.sample_norms import norms_as_calls, statistics_reported
from hybridize.conversion.trace import SCALAR_META

# Torch function names whose divisor is the second operand (``a / b``, ``a.div(b)``) ...
_DIVISOR_SECOND = frozenset({"div", "div_", "divide", "divide_", "true_divide", "true_divide_"})
# ... or the tensor itself (``1 / b``, ``b.reciprocal()``, ``b.rsqrt()``).
_DIVISOR_SELF = frozenset({"__rdiv__", "__rtruediv__", "reciprocal", "reciprocal_", "rsqrt"})


def _divisor(func: Callable, args: tuple, kwargs: dict) -> Any:
    name = getattr(func, "__name__", "")
    if name in _DIVISOR_SECOND:
        return kwargs.get("other", args[1] if len(args) > 1 else None)
    if name in _DIVISOR_SELF:
        return args[0] if args else kwargs.get("input")
    return None


class _FollowInput(TorchFunctionMode):
    """Marks every tensor computed from a marked one; records divisions by marked tensors."""

    def __init__(self, source: torch.Tensor, where: Callable[[], str]) -> None:
        super().__init__()
        self._marked = [source]  # kept alive so that no id is reused while tracking
        self._ids = {id(source)}
        self._where = where
        self._statistics: set[int] = set()  # per-sample statistics the twin takes over T
        self._single_calls = 0  # depth inside calls whose divisions are not counted
        self.found: list[str] = []

    @contextmanager
    def single_call(self) -> Iterator[None]:
        """Divisions inside the block are one fused norm's (a single call, as ``layer_norm``)."""
        self._single_calls += 1
        try:
            yield
        finally:
            self._single_calls -= 1

    def exempt(self, statistic: torch.Tensor) -> None:
        """``statistic`` is a per-sample normalization's statistic (twin rule 5): dividing by it
        is not a division by the input's per-token value."""
        self._marked.append(statistic)  # kept alive: its id is not reused
        self._statistics.add(id(statistic))

    def _is_marked(self, value: object) -> bool:
        return isinstance(value, torch.Tensor) and id(value) in self._ids

    def __torch_function__(
        self, func: Callable, types: object, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not any(self._is_marked(v) for v in pytree.tree_leaves((args, kwargs))):
            return out
        divisor = _divisor(func, args, kwargs)
        if (
            not self._single_calls
            and self._is_marked(divisor)
            and id(divisor) not in self._statistics
            and not _one_per_sample(divisor)
        ):
            where = self._where()
            self.found.append(f"{where}: {func.__name__}" if where else func.__name__)
        for value in pytree.tree_leaves(out):
            if isinstance(value, torch.Tensor) and id(value) not in self._ids:
                self._marked.append(value)
                self._ids.add(id(value))
        return out


def _one_per_sample(divisor: torch.Tensor) -> bool:
    """A divisor with one value per sample (or one for the batch), such as ConvNeXt-V2's global
    response norm, ``x_g / mean(x_g)``: it is 0 only when the sample's whole activation is
    silent at that step, and then so is the numerator it scales, so the backward stays bounded
    (measured: convnextv2_atto, docs/conversion.md)."""
    return all(size == 1 for size in divisor.shape[1:])


def _meta_value(value: Any) -> Any:
    """A graph argument as a meta tensor of its recorded shape, or its recorded number
    (constants pass through)."""

    def to_meta(node: fx.Node) -> Any:
        meta = node.meta.get("tensor_meta")
        if not isinstance(meta, TensorMetadata):
            if SCALAR_META in node.meta:  # a number or a size read off a shape
                return node.meta[SCALAR_META]
            raise TypeError(f"{node.name} has no recorded tensor shape or value")
        return torch.empty(meta.shape, dtype=meta.dtype, device="meta")

    return fx.node.map_arg(value, to_meta)


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers are meta tensors (no data is copied);
    what the probe caches or updates (BN statistics, bias caches) stays in the copy."""
    memo: dict[int, Any] = {}
    for t in [*module.parameters(), *module.buffers()]:
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def input_divisions(ann: nn.Module, call_args: tuple, call_kwargs: dict) -> list[str] | str:
    """Where ``ann``, called as ``ann(*call_args, **call_kwargs)`` (fx nodes with recorded
    shapes, or constants), divides by a value computed from its first argument, as
    ``"submodule: op"``; a string says why the check could not run."""
    try:
        args = tuple(_meta_value(a) for a in call_args)
        kwargs = {k: _meta_value(v) for k, v in call_kwargs.items()}
    except TypeError as exc:
        return f"not checked for divisions ({exc})"
    if not args or not isinstance(args[0], torch.Tensor):
        return "not checked for divisions (the input is not a tensor)"
    probe = _meta_copy(ann)
    stack: list[str] = []

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: stack.append(name)

    def leave(*_: object) -> None:  # a hook that returned a value would replace the output
        stack.pop()

    for name, module in probe.named_modules():
        if name:
            module.register_forward_pre_hook(enter(name))
            module.register_forward_hook(leave)
    mode = _FollowInput(args[0], lambda: stack[-1] if stack else "")
    try:
        with (
            torch.no_grad(),
            statistics_reported(mode.exempt),
            norms_as_calls(mode.single_call),
            mode,
        ):
            probe(*args, **kwargs)
    except Exception as exc:  # a region meta tensors cannot run (data-dependent control flow)
        return f"not checked for divisions ({first_line(exc, 100)})"
    return mode.found
