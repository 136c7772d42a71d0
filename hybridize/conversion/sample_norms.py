"""Which calls are per-sample normalizations that a twin takes over the T steps of a sample
(twin rule 5; :mod:`hybridize.spiking.sample_norms` computes them): one table for the twin
rewrite, the tracer and the division probe.

torch's ``group_norm`` and ``normalize`` are seen by any tracer. timm's EvoNorm layers compute
their group statistics with plain Python functions (``group_std``, ``group_rms``) and divide by
them; the tracer records those as calls (so the twin can rewrite them), and the division probe
learns their results through :func:`statistics_reported` (a torch function mode sees only the
ops inside them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hybridize.spiking.sample_norms import (
    group_norm_over_time,
    group_rms_over_time,
    group_std_over_time,
    normalize_over_time,
)

# timm.layers.evo_norm's statistics -> their versions over the T steps
_TIMM_STATISTICS: dict[str, Callable[..., Tensor]] = {
    "group_std": group_std_over_time,
    "group_rms": group_rms_over_time,
}


def _timm_evo_norm() -> ModuleType | None:
    try:
        from timm.layers import evo_norm
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    return evo_norm


@functools.cache
def _timm_statistics() -> dict[Callable[..., Any], Callable[..., Tensor]]:
    evo_norm = _timm_evo_norm()
    if evo_norm is None:
        return {}
    return {getattr(evo_norm, name): over_time for name, over_time in _TIMM_STATISTICS.items()}


def is_gated_group_std_norm(module: nn.Module) -> bool:
    """timm's EvoNorm-S0 (also S0a, its subclass) with its gated activation x * sigmoid(v x)
    inside (``v``): a twin gets a SpikingGroupStdNorm for it, so the tracer keeps it a leaf."""
    evo_norm = _timm_evo_norm()
    return (
        evo_norm is not None
        and isinstance(module, evo_norm.EvoNorm2dS0)
        # read from the parameter table: a getattr while tracing would record a graph node
        and module._parameters.get("v") is not None
    )


def sample_norm_functions() -> dict[Callable[..., Any], Callable[..., Tensor]]:
    """ANN function -> the function a twin calls instead (with ``time_steps=T``)."""
    torch_norms: dict[Callable[..., Any], Callable[..., Tensor]] = {
        F.group_norm: group_norm_over_time,
        F.normalize: normalize_over_time,
    }
    return {**torch_norms, **_timm_statistics()}


def traced_as_calls() -> tuple[Callable[..., Any], ...]:
    """The plain Python functions of the table, for the tracer to record as calls."""
    return tuple(_timm_statistics())


@contextmanager
def statistics_reported(report: Callable[[Tensor], None]) -> Iterator[None]:
    """Inside the block every result of timm's EvoNorm statistics is passed to ``report``
    (the EvoNorm layers look the functions up in their module's namespace at each call, so
    the wrappers are put there for the block and the originals put back after it)."""
    evo_norm = _timm_evo_norm()
    if evo_norm is None:
        yield
        return
    _timm_statistics()  # the table holds the originals, never the wrappers below
    originals = {name: getattr(evo_norm, name) for name in _TIMM_STATISTICS}

    def reporting(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Tensor:
            out = original(*args, **kwargs)
            report(out)
            return out

        return call

    try:
        for name, original in originals.items():
            setattr(evo_norm, name, reporting(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(evo_norm, name, original)
