"""BatchNorm -> LIF without the membrane in memory: a LIF whose input is, whole, the output of a
train-mode BatchNorm keeps no H [T, M] for backward. It reuses what the BatchNorm node already
keeps (its input c and the batch statistics: the same storages, no new memory) and the spikes
(0/1: one bit inside a spiking branch, shared with the next layer's save; else one byte), and in backward
rebuilds y = (c - mean) * invstd * weight + bias and H from them in the same fused pass as BPTT.

Forward is untouched: the BatchNorm runs as before and the LIF kernel sees the very y, so spikes
equal the eager path bit for bit. The rebuilt y (and H) may differ from the forward's by float
rounding; the recurrence uses the saved spikes, not a re-thresholded H, so a value within an ulp
of the threshold cannot flip a reset: the gradient differs from the eager one by rounding only.

No module or graph changes: the BatchNorm is found through the LIF input's autograd node
(``NativeBatchNormBackward0``: CPU, and CUDA without cuDNN), in the BatchNorm's own memory order
(NCHW or channels-last); anything else (eval-mode statistics, a frozen bias, cuDNN's node, a
layout that differs from the BatchNorm input's) keeps the plain fused LIF.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hybridize.spiking.arithmetic import lif_charge, lif_reset
from hybridize.spiking.kernels._select import kernel_backend, run_kernel
from hybridize.spiking.kernels.compact import compacting, mark_binary
from hybridize.spiking.kernels.layout import MemoryOrder, dense_order, memory_order
from hybridize.spiking.kernels.lif import FusedLIF, LIFConfig, lif_backward, lif_forward

_BATCH_NORM_NODES = ("NativeBatchNormBackward0",)


@dataclass(frozen=True)
class BatchNormSource:
    """What autograd keeps of the train-mode BatchNorm that produced a LIF's input."""

    input: Tensor  # c, the shape and strides of the BatchNorm's output
    order: MemoryOrder  # c's (and the output's) memory order
    mean: Tensor  # [C] batch mean
    invstd: Tensor  # [C] 1 / sqrt(batch var + eps)
    weight: Tensor | None  # [C] or None (affine=False)
    bias: Tensor | None


def batch_norm_source(x: Tensor) -> BatchNormSource | None:
    """The BatchNorm whose output ``x`` is (whole, same element order), or None."""
    root = x._base if x._base is not None else x
    order = dense_order(root)
    if (
        root.numel() != x.numel()
        or root.dim() < 2
        or order is None
        or dense_order(x) is None  # dense views of one storage: the same memory order
        or x.data_ptr() != root.data_ptr()
        or root.output_nr != 0
    ):
        return None
    node: Any = root.grad_fn  # autograd node: its _saved_* fields are untyped
    if node is None or node.name() not in _BATCH_NORM_NODES or not node._saved_training:
        return None
    c, weight = node._saved_input, node._saved_weight
    if c.shape != root.shape or c.dtype != root.dtype or c.stride() != root.stride():
        return None
    # the bias is not kept by the node (its backward needs none): its gradient sink holds it
    # (with or without a weight; no sink: no bias, or a frozen one, which the node cannot tell)
    sink = node.next_functions[2][0] if len(node.next_functions) > 2 else None
    bias = getattr(sink, "variable", None) if sink is not None else None
    if sink is not None and bias is None:  # a computed bias: not reachable, keep the plain LIF
        return None
    if sink is None and weight is not None:  # a frozen bias beside a weight: not reachable
        return None
    mean, invstd = node._saved_result1, node._saved_result2
    if sink is None and not _unbiased(root, c, mean, invstd):  # a frozen bias, no weight
        return None
    return BatchNormSource(c, order, mean, invstd, weight, bias)


def _unbiased(y: Tensor, c: Tensor, mean: Tensor, invstd: Tensor) -> bool:
    """Whether a BatchNorm without weight or bias sink (``affine=False``, or a frozen bias the
    node cannot show) computed ``y`` without a bias: checked on its first sample."""
    channels = y.shape[1]
    got = y[0].reshape(channels, -1).double()
    want = (c[0].reshape(channels, -1).double() - mean.double()[:, None]) * invstd.double()[:, None]
    return bool(torch.allclose(got, want, rtol=1e-5, atol=1e-6))


def _rebuild_input(
    c: Tensor, mean: Tensor, invstd: Tensor, weight: Tensor | None, bias: Tensor | None, dtype
) -> Tensor:
    """y = (c - mean) * invstd * weight + bias for c [T, P, C, (S)] and per-channel stats,
    in float32 (or float64) and rounded to the LIF's dtype, as the BatchNorm's output is."""
    acc = torch.float64 if c.dtype == torch.float64 else torch.float32
    y = (c.to(acc) - mean.to(acc)) * invstd.to(acc)
    if weight is not None:
        y = y * weight.to(acc)
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(dtype)


def bn_lif_backward(
    grad: Tensor,
    c: Tensor,
    spikes: Tensor,
    mean: Tensor,
    invstd: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    tau: Tensor | float,
    cfg: LIFConfig,
    tau_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """BPTT of the LIF with H rebuilt from the BatchNorm's input and the forward's spikes.

    grad, c, spikes: [T, P, C, S] (P: what lies outside the channel in memory, S: inside it) with
    mean, invstd, weight, bias [C, 1]; or [T, P, C] with them [C] (channels innermost).
    Returns (dL/dy, as :func:`lif.lif_backward`'s dL/d(1/tau))."""
    y = _rebuild_input(c, mean, invstd, weight, bias, grad.dtype)
    v: Tensor | float = 0.0 if cfg.v_reset is None else cfg.v_reset
    hs = []
    for t in range(grad.shape[0]):
        h = lif_charge(y[t], v, tau, cfg.v_reset, cfg.decay_input)
        v = lif_reset(h, spikes[t], cfg.v_threshold, cfg.v_reset)
        hs.append(h)
    return lif_backward(grad, hs, tau, cfg, tau_grad, spikes=spikes)  # hs: no [T, ...] buffer


class FusedBatchNormLIF(torch.autograd.Function):
    """The fused T-step LIF on y [T, M] (M = N C S); keeps the spikes (bits or bytes), not H."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, tau: Tensor | float, cfg: LIFConfig, bn: BatchNormSource
    ) -> Tensor:
        tau_key = tau if isinstance(tau, float) else None
        spikes, _ = run_kernel(("lif_forward", cfg, tau_key), lif_forward, x, tau, cfg)
        mark_binary(spikes)
        # inside a spiking branch the spikes are stored as bits, shared with the next layer's
        # save; elsewhere as bytes (exact: 0/1)
        kept = spikes if compacting() else spikes.to(torch.uint8)
        tau_grad = isinstance(tau, Tensor) and ctx.needs_input_grad[1]
        # [T, P, C, S]: the BatchNorm's channel is dim 1 of its [T*N, C, ...] (or [T, C, ...]);
        # channels-last: S = 1, dropped so that the kernel's inner loop runs along C
        steps, outer, channels, inner = bn.order.channel_view(tuple(bn.input.shape), x.shape[0])
        channel_shape = (-1, 1) if inner > 1 else (-1,)
        per_channel = [
            None if p is None else p.detach().reshape(channel_shape)
            for p in (bn.mean, bn.invstd, bn.weight, bn.bias)
        ]
        ctx.save_for_backward(
            kept, bn.input.detach(), *per_channel, tau if isinstance(tau, Tensor) else None
        )
        ctx.cfg, ctx.tau_value, ctx.tau_grad = cfg, tau, tau_grad
        ctx.backend = kernel_backend()
        ctx.order = bn.order
        ctx.view = (steps, outer, channels, inner) if inner > 1 else (steps, outer, channels)
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None, None]:
        kept, c, mean, invstd, weight, bias, tau_t = ctx.saved_tensors
        tau = tau_t if tau_t is not None else ctx.tau_value
        tau_key = tau if isinstance(tau, float) else None
        key = (
            "bn_lif_backward",
            ctx.cfg,
            ctx.tau_grad,
            tau_key,
            weight is not None,
            bias is not None,
        )
        shape = ctx.view
        grad_y, grad_k = run_kernel(
            key,
            bn_lif_backward,
            grad.contiguous().reshape(shape),
            ctx.order.flat(c).reshape(shape),
            kept.reshape(shape).to(grad.dtype),
            mean,
            invstd,
            weight,
            bias,
            tau,
            ctx.cfg,
            ctx.tau_grad,
            backend=ctx.backend,
        )
        grad_tau = None
        if grad_k is not None:  # d(1/tau)/dtau = -1/tau^2
            grad_tau = (-grad_k / tau_t.double() ** 2).to(tau_t.dtype)
        return grad_y.reshape(grad.shape), grad_tau, None, None


def fused_batch_norm_lif(
    x: Tensor, tau: Tensor | float, cfg: LIFConfig, bn: BatchNormSource
) -> Tensor:
    """Spikes of the T-step LIF for x [T, ...], the output of the BatchNorm ``bn`` (x in the
    BatchNorm's memory order: :func:`batch_norm_source`)."""
    order = dense_order(x)
    assert order is not None  # batch_norm_source checked it
    return order.restore(
        FusedBatchNormLIF.apply(order.flat(x, lead=1), tau, cfg, bn), tuple(x.shape)
    )


def fused_lif(x: Tensor, tau: Tensor | float, cfg: LIFConfig) -> Tensor:
    """Spikes of the T-step LIF for x [T, ...] (any trailing shape), via
    :class:`FusedBatchNormLIF` (no H kept) when x is a train-mode BatchNorm's output, else via
    :class:`lif.FusedLIF`."""
    bn = batch_norm_source(x)
    if bn is not None and bn.input.shape[0] % x.shape[0] == 0:
        return fused_batch_norm_lif(x, tau, cfg, bn)
    order = memory_order(x)  # the [T, M] view in memory order: no copy for channels-last
    return order.restore(FusedLIF.apply(order.flat(x, lead=1), tau, cfg), tuple(x.shape))
