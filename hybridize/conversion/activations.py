"""What counts as an activation (becomes a LIF in a twin) and as max pooling (becomes average
pooling under the ``max-to-avg`` rule).

Each mapping is ordered: the first entry that matches wins, and the same order is used when the
plan prints what it found. Matching is by ``isinstance`` so that subclasses (timm's variants,
user subclasses) are covered.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _timm_activations() -> tuple[type[nn.Module], ...]:
    """timm's own activation classes (they do not subclass torch's)."""
    try:
        from timm.layers import activations as act
    except ImportError:  # pragma: no cover - timm is a dependency
        return ()
    names = ("GELU", "GELUTanh", "QuickGELU", "Swish", "HardSwish", "Mish", "HardMish")
    return tuple(getattr(act, n) for n in names if hasattr(act, n))


# Module activations, matched in this order by isinstance.
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.ELU,
    nn.Mish,
    *_timm_activations(),
)

# Functional activations (call_function targets).
ACTIVATION_FUNCTIONS: tuple[Callable, ...] = (
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    F.relu6,
    F.leaky_relu,
    F.leaky_relu_,
    F.silu,
    F.gelu,
    F.hardswish,
    F.elu,
    F.mish,
)

# Tensor-method activations (call_method targets).
ACTIVATION_METHODS: tuple[str, ...] = ("relu", "relu_")

# Binary additions that can be a residual join (SEW rule).
ADD_FUNCTIONS: tuple[Callable, ...] = (operator.add, operator.iadd, torch.add)
ADD_METHODS: tuple[str, ...] = ("add", "add_")


def is_activation_module(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_MODULES)


def is_activation_function(target: object) -> bool:
    return any(target is fn for fn in ACTIVATION_FUNCTIONS)


def activation_name(module: nn.Module) -> str:
    """Name of the first matching activation class (for plans and reports)."""
    for cls in ACTIVATION_MODULES:
        if isinstance(module, cls):
            return cls.__name__
    return type(module).__name__


def max_to_avg_pool(module: nn.Module) -> nn.Module | None:
    """The average-pooling twin of a max-pooling module, or None if it is not max pooling."""
    # Order matters: timm's "same"-padding max pool is a MaxPool2d subclass.
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    if isinstance(module, MaxPool2dSame):
        return AvgPool2dSame(
            module.kernel_size, module.stride, ceil_mode=module.ceil_mode, count_include_pad=False
        )
    dilation = getattr(module, "dilation", 1)
    if any(d != 1 for d in (dilation if isinstance(dilation, tuple) else (dilation,))):
        return None  # average pooling has no dilation: keep the max pool
    for max_cls, avg_cls in _MAX_TO_AVG:
        if isinstance(module, max_cls):
            return avg_cls(
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                ceil_mode=module.ceil_mode,
            )
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return nn.AdaptiveAvgPool2d(module.output_size)
    return None


_MAX_TO_AVG: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.MaxPool1d, nn.AvgPool1d),
    (nn.MaxPool2d, nn.AvgPool2d),
    (nn.MaxPool3d, nn.AvgPool3d),
)

# Functional max pooling -> average pooling (same positional signature up to `padding`).
MAX_TO_AVG_FUNCTIONS: dict[Callable, Callable] = {
    F.max_pool1d: F.avg_pool1d,
    F.max_pool2d: F.avg_pool2d,
    F.max_pool3d: F.avg_pool3d,
    F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
}

CONV_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
WEIGHTED_LAYERS: tuple[type[nn.Module], ...] = (*CONV_LAYERS, nn.Linear)
# layers with a per-feature scale: a conv group's norm, a twin's zero-initialised residual norm
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)
# spatial pools that may close a conv group (timm's *PoolSame subclass these)
POOL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
)
# layers a conv group passes through (timm blocks put drop_block / aa Identity between norm
# and activation)
PASS_THROUGH_LAYERS: tuple[type[nn.Module], ...] = (nn.Identity, nn.modules.dropout._DropoutNd)
