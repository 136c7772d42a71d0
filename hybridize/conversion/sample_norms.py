"""Normalization calls the conversion treats by name: one table each for the twin rewrite, the
tracer and the division probe.

Per-sample normalizations a twin takes over the T steps of a sample (twin rule 5;
:mod:`hybridize.spiking.sample_norms` computes them): torch's ``group_norm`` and ``normalize``
are seen by any tracer; timm's EvoNorm layers compute their group statistics with plain Python
functions (``group_std``, ``group_rms``) and divide by them, so the tracer records those as
calls (the twin can rewrite them) and the division probe learns their results through
:func:`statistics_reported` (a torch function mode sees only the ops inside them). timm's
FilterResponseNorm layers multiply by ``inv_instance_rms``, whose ``rsqrt`` the probe counts as
that norm's own (:func:`norms_as_calls`). Layers with their activation inside (EvoNorm-S0,
FilterResponseNormTlu2d) a twin swaps whole (:func:`norm_act_twin`).

Per-position norms over channels that timm writes out (``rms_norm2d``, ``simple_norm``) are
the maths of ``F.rms_norm`` / ``F.layer_norm``, which the division probe sees as single calls;
:func:`norms_as_calls` lets it see timm's the same way (a twin runs them per step, as it
runs ``layer_norm``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from hybridize.spiking.sample_norms import (
    GroupNormOverTime,
    LayerNormPerStep,
    RMSNormPerStep,
    SpikingFilterResponseNorm,
    SpikingGroupStdNorm,
    group_norm_over_time,
    group_rms_over_time,
    group_std_over_time,
    inv_instance_rms_over_time,
    layer_norm_per_step,
    normalize_over_time,
    rms_norm_per_step,
)

# timm.layers.<module>'s per-sample statistics -> their versions over the T steps
_TIMM_STATISTICS: dict[str, dict[str, Callable[..., Tensor]]] = {
    "evo_norm": {"group_std": group_std_over_time, "group_rms": group_rms_over_time},
    "filter_response_norm": {"inv_instance_rms": inv_instance_rms_over_time},
}


# timm.layers.<module>'s written-out norms whose divisions are the norm's own: the per-position
# norms over channels of timm.layers.norm (RmsNorm, RmsNorm2d, SimpleNorm, SimpleNorm2d,
# LayerNormExp2d, their Fp32 forms and fast paths), FilterResponseNorm's inverse instance RMS
_TIMM_NORMS_AS_CALLS: dict[str, tuple[str, ...]] = {
    "norm": (
        "rms_norm",
        "rms_norm2d",
        "simple_norm",
        "fast_rms_norm",
        "fast_rms_norm2d",
        "fast_simple_norm",
        "_layer_norm_cf",
        "_layer_norm_cf_sqm",
    ),
    "filter_response_norm": ("inv_instance_rms",),
}


def _timm_layers(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"timm.layers.{name}")
    except ImportError:  # pragma: no cover - timm is a dependency
        return None


def _timm_evo_norm() -> ModuleType | None:
    return _timm_layers("evo_norm")


@functools.cache
def _timm_statistics() -> dict[Callable[..., Any], Callable[..., Tensor]]:
    table: dict[Callable[..., Any], Callable[..., Tensor]] = {}
    for module_name, statistics in _TIMM_STATISTICS.items():
        module = _timm_layers(module_name)
        for name, over_time in statistics.items():
            if module is not None and hasattr(module, name):
                table[getattr(module, name)] = over_time
    return table


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


def _is_tlu_filter_response_norm(module: nn.Module) -> bool:
    """timm's FilterResponseNormTlu2d with its thresholded linear unit max(x, tau) (``tau``)."""
    frn = _timm_layers("filter_response_norm")
    return (
        frn is not None
        and isinstance(module, frn.FilterResponseNormTlu2d)
        and module._parameters.get("tau") is not None
    )


NormActTwin = Callable[[nn.Module, nn.Module, int], nn.Module]  # (norm, neuron, T) -> twin layer

# norm layers with their activation inside that a twin swaps whole (twin rule 1): the test,
# the twin layer's factory and the statistic it takes over the T steps
_NORM_ACT_TWINS: tuple[tuple[Callable[[nn.Module], bool], NormActTwin, str], ...] = (
    (is_gated_group_std_norm, SpikingGroupStdNorm.like, "group_std"),
    (_is_tlu_filter_response_norm, SpikingFilterResponseNorm.like, "inv_instance_rms"),
)


def norm_act_twin(module: nn.Module) -> tuple[NormActTwin, str] | None:
    """For a norm layer with its activation inside (EvoNorm-S0, FilterResponseNormTlu2d): the
    factory of its twin layer ``(norm, neuron, T) -> module`` and the statistic's name; None
    for any other module. The tracer keeps these layers leaves."""
    for matches, make, statistic in _NORM_ACT_TWINS:
        if matches(module):
            return make, statistic
    return None


def sample_norm_functions() -> dict[Callable[..., Any], Callable[..., Tensor]]:
    """ANN function -> the function a twin calls instead (with ``time_steps=T``)."""
    torch_norms: dict[Callable[..., Any], Callable[..., Tensor]] = {
        F.group_norm: group_norm_over_time,
        F.normalize: normalize_over_time,
    }
    return {**torch_norms, **_timm_statistics()}


# per-token norms a twin runs per step with the silent-row rule (twin rule 5): the ANN function
# -> the twin's, called with the same arguments
PER_STEP_NORM_FUNCTIONS: dict[Callable[..., Any], Callable[..., Tensor]] = {
    F.layer_norm: layer_norm_per_step,
    F.rms_norm: rms_norm_per_step,
}


# torch's norm layers (exact types) -> (layer, T) -> the twin's copy
NORM_MODULE_TWINS: dict[type[nn.Module], Callable[[Any, int], nn.Module]] = {
    nn.GroupNorm: GroupNormOverTime.like,
    nn.LayerNorm: lambda norm, t: LayerNormPerStep.like(norm),
    nn.RMSNorm: lambda norm, t: RMSNormPerStep.like(norm),
}


def norm_module_twin(module: nn.Module, time_steps: int) -> nn.Module | None:
    """The twin's copy of a torch norm layer the tracer keeps a leaf (twin rule 5): a group
    norm over the T steps, a layer or RMS norm per step with the silent-row rule; None for
    any other module. Exact types: subclasses (timm's norm layers) are traced through, and
    their functional calls are rewritten instead."""
    make = NORM_MODULE_TWINS.get(type(module))
    return None if make is None else make(module, time_steps)


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

    with _wrapped_in(_timm_evo_norm(), _TIMM_STATISTICS["evo_norm"], reporting):
        yield


@contextmanager
def norms_as_calls(inside: Callable[[], AbstractContextManager[object]]) -> Iterator[None]:
    """Inside the block each of timm's written-out norms (:data:`_TIMM_NORMS_AS_CALLS`) runs
    within ``inside()`` (the division probe's "not a division here"), as ``F.layer_norm``
    would run as one call."""

    def as_one_call(original: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Tensor:
            with inside():
                return original(*args, **kwargs)

        return call

    with contextlib.ExitStack() as stack:
        for module_name, names in _TIMM_NORMS_AS_CALLS.items():
            stack.enter_context(_wrapped_in(_timm_layers(module_name), names, as_one_call))
        yield


@contextmanager
def _wrapped_in(
    namespace: ModuleType | None,
    names: Iterable[str],
    wrap: Callable[[Callable[..., Tensor]], Callable[..., Tensor]],
) -> Iterator[None]:
    """``namespace.name`` replaced by ``wrap(original)`` for the block, the originals put back
    after it (timm's layers look these functions up in their module's namespace at each call).
    The replacement is process-wide while the block runs (the conversion's division probe, on
    meta tensors): another thread running timm's norms at that moment would go through the
    wrappers, which only observe, so its results are unchanged."""
    originals = {n: getattr(namespace, n) for n in names if hasattr(namespace, n)}
    try:
        for name, original in originals.items():
            setattr(namespace, name, wrap(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(namespace, name, original)
