"""Normalization calls the conversion treats by name: one table each for the twin rewrite, the
tracer and the division probe.

Per-sample normalizations a twin takes over the T steps of a sample (twin rule 5;
:mod:`hybridize.spiking.sample_norms` computes them): torch's ``group_norm`` and ``normalize``
are seen by any tracer; timm's EvoNorm layers compute their group statistics with plain Python
functions (``group_std``, ``group_rms``) and divide by them, so the tracer records those as
calls (the twin can rewrite them) and the division probe learns their results through
:func:`statistics_reported` (a torch function mode sees only the ops inside them).

Per-position norms over channels that timm writes out (``rms_norm2d``, ``simple_norm``) are
the maths of ``F.rms_norm`` / ``F.layer_norm``, which the division probe sees as single calls;
:func:`channel_norms_as_calls` lets it see timm's the same way (a twin runs them per step, as it
runs ``layer_norm``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
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


# timm.layers.norm's written-out per-position norms over channels (RmsNorm, RmsNorm2d,
# SimpleNorm, SimpleNorm2d, LayerNormExp2d, their Fp32 forms and fast paths)
_TIMM_CHANNEL_NORMS = (
    "rms_norm",
    "rms_norm2d",
    "simple_norm",
    "fast_rms_norm",
    "fast_rms_norm2d",
    "fast_simple_norm",
    "_layer_norm_cf",
    "_layer_norm_cf_sqm",
)


def _timm_layers(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"timm.layers.{name}")
    except ImportError:  # pragma: no cover - timm is a dependency
        return None


def _timm_evo_norm() -> ModuleType | None:
    return _timm_layers("evo_norm")


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
    _timm_statistics()  # the table holds the originals, never the wrappers below

    def reporting(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Tensor:
            out = original(*args, **kwargs)
            report(out)
            return out

        return call

    with _wrapped_in(_timm_evo_norm(), _TIMM_STATISTICS, reporting):
        yield


@contextmanager
def channel_norms_as_calls(inside: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Inside the block each of timm's written-out channel norms runs within ``inside()`` (the
    division probe's "not a division here"), as ``F.layer_norm`` would run as one call."""

    def as_one_call(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Tensor:
            with inside():
                return original(*args, **kwargs)

        return call

    with _wrapped_in(_timm_layers("norm"), _TIMM_CHANNEL_NORMS, as_one_call):
        yield


@contextmanager
def _wrapped_in(
    namespace: ModuleType | None,
    names: Iterable[str],
    wrap: Callable[[Callable[..., Tensor]], Callable[..., Tensor]],
) -> Iterator[None]:
    """``namespace.name`` replaced by ``wrap(original)`` for the block, the originals put back
    after it (timm's layers look these functions up in their module's namespace at each call)."""
    originals = {n: getattr(namespace, n) for n in names if hasattr(namespace, n)}
    try:
        for name, original in originals.items():
            setattr(namespace, name, wrap(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(namespace, name, original)
