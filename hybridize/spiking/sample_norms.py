"""Per-sample normalizations for the twin: statistics over the T time steps of a sample.

The twin runs on time-folded tensors ``[T*N, ...]`` (t-major). A per-sample normalization
called there as in the ANN (``group_norm``, ``F.normalize``, the group statistics of timm's
EvoNorm layers, the instance RMS of its FilterResponseNorm layers) would take its statistics over
one time step of one sample: a single bit plane, or one step of a LIF output. Those are often
exactly zero (a LIF is silent while its membrane charges), so the statistic sits at its eps and
the backward multiplies by ``1 / sqrt(eps)`` (group norm) or ``1 / eps`` (``F.normalize``).
The functions here take the statistics over the same values as the ANN's op *and* the T steps
of that sample, so each step of a sample goes through the same affine map, which commutes with
the decoder's weighted sum over steps (docs/conversion.md, "Per-sample normalizations").

Per-token norms (``layer_norm``, ``rms_norm``) stay per step, as in the ANN; a token that is
silent at a step (all 0, or constant) would still divide by eps, so in training such a row
passes its gradient through unchanged (:func:`layer_norm_per_step`), as a group that is silent
at every step does in :func:`group_norm_over_time`.
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from hybridize.spiking._dispatch import use_custom_backward


def _split_time(x: Tensor, time_steps: int) -> Tensor:
    """[T*N, ...] -> [T, N, ...] (t-major folding)."""
    if x.dim() < 1 or x.shape[0] % time_steps:
        raise ValueError(
            f"expected a time-folded tensor whose dim 0 is a multiple of {time_steps}, "
            f"got shape {tuple(x.shape)}"
        )
    return x.reshape(time_steps, x.shape[0] // time_steps, *x.shape[1:])


def group_norm_over_time(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    *,
    time_steps: int,
) -> Tensor:
    """``F.group_norm`` of a folded ``[T*N, C, ...]`` tensor whose mean and variance per
    (sample, group) are over the group's values at all T steps of the sample."""
    planes = _split_time(x, time_steps).movedim(0, 2)  # [N, C, T, ...]
    y = F.group_norm(planes, num_groups, None, None, eps)
    if use_custom_backward(planes, export_mode=False):
        y = _silent_groups_pass_through(planes, y, num_groups)
    y = y.movedim(2, 0).reshape(x.shape)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _silent_groups_pass_through(planes: Tensor, y: Tensor, num_groups: int) -> Tensor:
    """Where a (sample, group) is constant over all its values and T steps (a twin whose LIF
    never fired), the normalized value is 0 whatever the denominator, but the backward would
    multiply by ``1 / sqrt(eps)`` (316 at 1e-5, per norm, compounding through a silent twin).
    There the gradient passes unchanged instead, and the forward is that 0 exactly (group
    norm's own value, which a constant other than 0 can miss by its rounding of the mean)."""
    n, c = planes.shape[:2]
    grouped = planes.detach().reshape(n, num_groups, -1)
    silent = grouped.amax(-1) == grouped.amin(-1)  # [N, G]
    mask = silent.repeat_interleave(c // num_groups, dim=1)
    mask = mask.reshape(n, c, *([1] * (planes.dim() - 2)))
    return _passed_through(planes, y, mask)


def _passed_through(x: Tensor, normalized: Tensor, silent: Tensor) -> Tensor:
    """``normalized`` where ``silent`` is False; where it is True, 0 with the gradient of the
    identity (``x - x.detach()``)."""
    return torch.where(silent, x - x.detach(), normalized)


def _silent_rows(x: Tensor, dims: int, *, constant: bool) -> Tensor:
    """Per row of the last ``dims`` dims of ``x``: True where all its values are equal
    (``constant``) or all 0; shaped to broadcast against ``x``."""
    rows = x.detach().flatten(x.dim() - dims)  # dims >= 1: torch's norms need a shape
    silent = rows.amax(-1) == rows.amin(-1) if constant else rows.abs().amax(-1) == 0
    return silent.reshape(*silent.shape, *([1] * dims))


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm_per_step(
    x: Tensor,
    normalized_shape: list[int] | tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``F.layer_norm`` as a twin runs it, per token and time step as in the ANN, except in
    training where a row is constant (a token whose bit planes or spikes are all 0 at that
    step): its normalized value is 0 whatever the denominator, and its gradient passes
    through unchanged instead of times ``1 / sqrt(eps)`` (1000 at 1e-6). Eval and export run
    ``F.layer_norm`` itself."""
    if not use_custom_backward(x, export_mode=False):
        return F.layer_norm(x, normalized_shape, weight, bias, eps)
    if not torch.is_autocast_enabled(x.device.type):
        return _LayerNormSilentRows.apply(x, tuple(normalized_shape), weight, bias, eps)
    # under autocast, torch's own layer_norm (and its casting), then the rule composed around it
    y = F.layer_norm(x, normalized_shape, None, None, eps)
    silent = _silent_rows(x, len(normalized_shape), constant=True)
    return _affine(_passed_through(x, y, silent), weight, bias)


class _LayerNormSilentRows(torch.autograd.Function):
    """torch's fused layer norm forward and backward; then, in the input's gradient, the rows
    that are constant take the identity's gradient times the weight. (The composition in
    :func:`layer_norm_per_step` computes the same at 2.0x the time of torch's op, this 1.2x:
    benchmarks/silent_norm_cost.py.)"""

    @staticmethod
    def forward(ctx: Any, x: Tensor, shape: tuple[int, ...], weight: Tensor | None,
                bias: Tensor | None, eps: float) -> Tensor:  # fmt: skip
        out, mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[2], ctx.needs_input_grad[3]]
        gx, gw, gb = torch.ops.aten.native_layer_norm_backward(
            grad, x, ctx.shape, mean, rstd, weight, bias, wanted
        )
        if gx is not None:
            through = grad if weight is None else grad * weight
            gx = torch.where(_silent_rows(x, len(ctx.shape), constant=True), through, gx)
        return gx, None, gw, gb, None


def rms_norm_per_step(
    x: Tensor,
    normalized_shape: list[int] | tuple[int, ...],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """``F.rms_norm`` as a twin runs it: :func:`layer_norm_per_step`'s rule for the rows that
    are all 0 (whose backward would multiply by ``1 / sqrt(eps)``)."""
    if not use_custom_backward(x, export_mode=False):
        return F.rms_norm(x, normalized_shape, weight, eps)
    y = F.rms_norm(x, normalized_shape, None, eps)
    silent = _silent_rows(x, len(normalized_shape), constant=False)
    return _affine(_passed_through(x, y, silent), weight, None)


def normalize_over_time(
    x: Tensor,
    p: float = 2.0,
    dim: int = 1,
    eps: float = 1e-12,
    out: Tensor | None = None,
    *,
    time_steps: int,
) -> Tensor:
    """``F.normalize`` of a folded ``[T*N, ...]`` tensor: each vector along ``dim`` divided by
    the p-norm of that vector over all T steps of its sample (at least ``eps``). In training, a
    vector that is 0 at every step (its quotient is 0 whatever the denominator, the backward
    would multiply by ``1 / eps``) passes its gradient through unchanged. ``out`` is accepted
    for F.normalize's signature (traced calls pass ``out=None``) and must be None."""
    if out is not None:
        raise ValueError("normalize_over_time does not write into out=")
    d = dim % x.dim()
    if d == 0:  # a norm across the batch is not a per-sample statistic
        return F.normalize(x, p, dim, eps)
    planes = _split_time(x, time_steps)
    norm = torch.linalg.vector_norm(planes, ord=p, dim=(0, d + 1), keepdim=True)
    y = planes / norm.clamp_min(eps)
    if use_custom_backward(planes, export_mode=False):
        y = _passed_through(planes, y, norm.detach() == 0)
    return y.reshape(x.shape)


def _group_statistic(x: Tensor, groups: int, time_steps: int, squares_only: bool, eps: float):
    """Per (sample, group) sqrt(var + eps) (or sqrt(mean of squares + eps)) of a folded
    [T*N, C, ...] tensor over the group's values at all T steps, broadcast back to x's shape."""
    planes = _split_time(x, time_steps)  # [T, N, C, ...]
    t, n, c = planes.shape[:3]
    if c % groups:
        raise ValueError(f"{c} channels do not split into {groups} groups")
    grouped = planes.reshape(t, n, groups, -1).float()
    if squares_only:
        stat = grouped.square().mean(dim=(0, 3), keepdim=True)
    else:
        stat = grouped.var(dim=(0, 3), unbiased=False, keepdim=True)
    stat = stat.add(eps).sqrt().to(x.dtype)  # [1, N, G, 1]
    return stat.expand(t, n, groups, grouped.shape[3]).reshape(x.shape)


def group_std_over_time(
    x: Tensor, groups: int = 32, eps: float = 1e-5, flatten: bool = False, *, time_steps: int
) -> Tensor:
    """timm's EvoNorm ``group_std`` (sqrt of the variance per sample and channel group, eps
    inside, broadcast to x's shape) of a folded ``[T*N, C, H, W]`` tensor, over the T steps of
    each sample too. ``flatten`` changes only how timm reshapes, not the value."""
    return _group_statistic(x, groups, time_steps, squares_only=False, eps=eps)


def group_rms_over_time(
    x: Tensor, groups: int = 32, eps: float = 1e-5, *, time_steps: int
) -> Tensor:
    """timm's EvoNorm ``group_rms`` (root mean square per sample and channel group) of a folded
    ``[T*N, C, H, W]`` tensor, over the T steps of each sample too."""
    return _group_statistic(x, groups, time_steps, squares_only=True, eps=eps)


def inv_instance_rms_over_time(x: Tensor, eps: float = 1e-5, *, time_steps: int) -> Tensor:
    """timm's FilterResponseNorm statistic ``inv_instance_rms`` (1 / sqrt(mean of x^2 over H, W
    + eps) per sample and channel, broadcast to x's shape) of a folded ``[T*N, C, H, W]``
    tensor, the mean over the T steps of each sample too."""
    planes = _split_time(x, time_steps)  # [T, N, C, H, W]
    if planes.dim() != 5:
        raise ValueError(f"expected a folded [T*N, C, H, W] tensor, got shape {tuple(x.shape)}")
    mean_square = planes.square().float().mean(dim=(0, 3, 4), keepdim=True)
    return mean_square.add(eps).rsqrt().to(x.dtype).expand(planes.shape).reshape(x.shape)


_Norm = TypeVar("_Norm", bound=nn.Module)


def _loaded_like(new: _Norm, norm: nn.Module) -> _Norm:
    """``new`` with ``norm``'s parameters copied in, on their device and dtype."""
    new.load_state_dict(norm.state_dict())
    weight = next(norm.parameters(), None)
    return new.to(weight) if weight is not None else new


class GroupNormOverTime(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` for folded ``[T*N, C, ...]`` inputs, statistics over the T
    steps of a sample (:func:`group_norm_over_time`); same parameters and state dict."""

    def __init__(
        self, num_groups: int, num_channels: int, *, time_steps: int, **kw: object
    ) -> None:
        super().__init__(num_groups, num_channels, **kw)  # type: ignore[arg-type]
        self.time_steps = time_steps

    @classmethod
    def like(cls, norm: nn.GroupNorm, time_steps: int) -> GroupNormOverTime:
        """A copy of ``norm`` (sharing nothing) that pools its statistics over time."""
        new = cls(norm.num_groups, norm.num_channels, time_steps=time_steps, eps=norm.eps,
                  affine=norm.affine)  # fmt: skip
        return _loaded_like(new, norm)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, time_steps={self.time_steps}"

    def forward(self, x: Tensor) -> Tensor:
        return group_norm_over_time(
            x, self.num_groups, self.weight, self.bias, self.eps, time_steps=self.time_steps
        )


class LayerNormPerStep(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` in a twin (:func:`layer_norm_per_step`); same parameters and
    state dict."""

    @classmethod
    def like(cls, norm: nn.LayerNorm) -> LayerNormPerStep:
        """A copy of ``norm`` (sharing nothing) with the silent-row rule."""
        new = cls(norm.normalized_shape, norm.eps, norm.elementwise_affine,
                  bias=norm.bias is not None)  # fmt: skip
        return _loaded_like(new, norm)

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_per_step(x, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNormPerStep(nn.RMSNorm):
    """:class:`torch.nn.RMSNorm` in a twin (:func:`rms_norm_per_step`); same parameters and
    state dict."""

    @classmethod
    def like(cls, norm: nn.RMSNorm) -> RMSNormPerStep:
        """A copy of ``norm`` (sharing nothing) with the silent-row rule."""
        new = cls(norm.normalized_shape, norm.eps, norm.elementwise_affine)
        return _loaded_like(new, norm)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm_per_step(x, list(self.normalized_shape), self.weight, self.eps)


class _SpikingNormAct(nn.Module):
    """A norm layer with its activation inside, as a twin runs it: the layer's statistic over
    the T steps of a sample, its per-channel affine map, then the spiking neuron ``act``."""

    def __init__(self, act: nn.Module, num_features: int, eps: float, *, time_steps: int) -> None:
        super().__init__()
        self.act = act
        self.eps, self.time_steps = eps, time_steps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def _copy_affine(self, norm: nn.Module) -> _SpikingNormAct:
        weight, bias = norm.get_parameter("weight"), norm.get_parameter("bias")
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)
        return self.to(weight)

    def reset_parameters(self) -> None:
        """Fresh values, as timm initializes these layers (``twin_init: fresh``)."""
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, time_steps={self.time_steps}"

    def _affine_then_spike(self, normalized: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (normalized.dim() - 2)
        return self.act(normalized * self.weight.reshape(shape) + self.bias.reshape(shape))


class SpikingGroupStdNorm(_SpikingNormAct):
    """The twin of timm's EvoNorm-S0 (``x * sigmoid(v x) / group_std(x) * weight + bias``): the
    normalization with its group std over the T steps of a sample, then the spiking neuron
    ``act`` in place of the gate, as after any norm layer with an activation:
    ``act(x / group_std_over_time(x) * weight + bias)``. (A LIF before the division would see
    the unnormalized conv output and stay silent.)"""

    def __init__(
        self, act: nn.Module, num_features: int, groups: int, eps: float, *, time_steps: int
    ) -> None:
        super().__init__(act, num_features, eps, time_steps=time_steps)
        self.groups = groups

    @classmethod
    def like(cls, norm: nn.Module, act: nn.Module, time_steps: int) -> _SpikingNormAct:
        """The twin of an EvoNorm-S0 layer ``norm`` (its weight and bias copied)."""
        groups, eps = int(vars(norm)["groups"]), float(vars(norm)["eps"])  # plain attributes
        new = cls(act, norm.get_parameter("weight").numel(), groups, eps, time_steps=time_steps)
        return new._copy_affine(norm)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, {super().extra_repr()}"

    def forward(self, x: Tensor) -> Tensor:
        std = group_std_over_time(x, self.groups, self.eps, time_steps=self.time_steps)
        return self._affine_then_spike(x / std)


class SpikingFilterResponseNorm(_SpikingNormAct):
    """The twin of timm's FilterResponseNormTlu2d (``max(x * inv_instance_rms(x) * weight +
    bias, tau)``): the statistic over the T steps of a sample, then the spiking neuron ``act``
    in place of the thresholded linear unit: ``act(x * inv_instance_rms_over_time(x) * weight
    + bias)``. The TLU's learned threshold ``tau`` has no counterpart: the neuron's threshold
    plays its part."""

    @classmethod
    def like(cls, norm: nn.Module, act: nn.Module, time_steps: int) -> _SpikingNormAct:
        """The twin of a FilterResponseNormTlu2d layer ``norm`` (its weight and bias copied)."""
        eps = float(vars(norm)["eps"])  # a plain attribute
        new = cls(act, norm.get_parameter("weight").numel(), eps, time_steps=time_steps)
        return new._copy_affine(norm)

    def forward(self, x: Tensor) -> Tensor:
        rms = inv_instance_rms_over_time(x, self.eps, time_steps=self.time_steps)
        return self._affine_then_spike(x * rms)
