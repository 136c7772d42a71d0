"""LIF neuron (docs/method.md 4, SpikingJelly semantics) as pure functions with explicit state and a
stateless multi-step module. Its options and their rules live in :mod:`hybridize.spiking.options`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from hybridize.errors import SpikingConfigError
from hybridize.spiking._dispatch import exporting, use_custom_backward
from hybridize.spiking.arithmetic import lif_charge, lif_reset
from hybridize.spiking.kernels import (
    LIFConfig,
    compacting,
    divides_as_eager,
    fused_lif,
    fused_lif_spikes,
    kernel_backend,
    mark_binary,
    use_fused,
)
from hybridize.spiking.options import (
    DEFAULT_NEURON,
    SpikeSurrogateName,
    option_property,
    resolve_neuron,
)
from hybridize.spiking.surrogates import SPIKE_SURROGATES

SpikeFunction = Callable[[Tensor], Tensor]


class _SpikeFunction(torch.autograd.Function):
    """Heaviside(x) (Heaviside(0) = 1) forward; surrogate derivative backward. Saves only x."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate, ctx.alpha = surrogate, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        return grad * SPIKE_SURROGATES[ctx.surrogate].derivative(x, ctx.alpha), None, None


def heaviside(x: Tensor) -> Tensor:
    """Heaviside step with Heaviside(0) = 1, standard ops only (no gradient)."""
    return (x >= 0).to(x.dtype)


def spike_function(
    surrogate: SpikeSurrogateName = DEFAULT_NEURON.surrogate,
    alpha: float | None = None,
    *,
    export_mode: bool = False,
) -> SpikeFunction:
    """A spike function x -> Heaviside(x) whose backward is the named surrogate derivative.

    When no gradient is wanted (or in export mode) it is the plain standard-op Heaviside.
    """
    opts = resolve_neuron("spike_function", surrogate=surrogate, alpha=alpha)
    name, a = opts.surrogate, float(opts.alpha or 0.0)

    def fn(x: Tensor) -> Tensor:
        if use_custom_backward(x, export_mode):
            return _SpikeFunction.apply(x, name, a)
        return heaviside(x)

    return fn


def lif_step(
    x_t: Tensor,
    v: Tensor | float,
    *,
    tau: Tensor | float = DEFAULT_NEURON.tau,
    v_threshold: float = DEFAULT_NEURON.v_threshold,
    v_reset: float | None = DEFAULT_NEURON.v_reset,
    decay_input: bool = DEFAULT_NEURON.decay_input,
    detach_reset: bool = DEFAULT_NEURON.detach_reset,
    spike_fn: SpikeFunction = heaviside,
) -> tuple[Tensor, Tensor]:
    """One LIF step: charge, fire, reset. Returns (spike S_t, membrane V_t).

    H = V + (X - (V - V_reset)) / tau  (decay_input)  or  H = V - (V - V_reset) / tau + X;
    S = Heaviside(H - V_th); hard reset V = H (1 - S) + V_reset S, soft (v_reset None)
    V = H - V_th S. ``detach_reset`` detaches S in the reset only.
    """
    h = lif_charge(x_t, v, tau, v_reset, decay_input)
    s = spike_fn(h - v_threshold)
    return s, lif_reset(h, s.detach() if detach_reset else s, v_threshold, v_reset)


class _LIFSequence(torch.autograd.Function):
    """The whole T-step LIF with a hand-written BPTT backward (the surrogate at every spike).

    Forward runs the very ops of :func:`lif_step` (so values equal the export path bit for
    bit) and saves only H [T, ...] (plus X when tau needs a gradient); V_{t-1} and S_t are
    recomputed from H in backward.
    """

    @staticmethod
    def forward(ctx: Any, x_seq: Tensor, tau: Tensor | float, cfg: LIFConfig) -> Tensor:
        v: Tensor | float = 0.0 if cfg.v_reset is None else cfg.v_reset
        hs = torch.empty_like(x_seq)
        spikes = torch.empty_like(x_seq)
        for t in range(x_seq.shape[0]):
            h = lif_charge(x_seq[t], v, tau, cfg.v_reset, cfg.decay_input)
            s = heaviside(h - cfg.v_threshold)
            v = lif_reset(h, s, cfg.v_threshold, cfg.v_reset)
            hs[t], spikes[t] = h, s
        tau_grad = isinstance(tau, Tensor) and ctx.needs_input_grad[1]
        ctx.save_for_backward(hs, x_seq if tau_grad else None, tau if tau_grad else None)
        ctx.cfg, ctx.tau_value, ctx.tau_grad = cfg, tau, tau_grad
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        hs, x_seq, tau_t = ctx.saved_tensors
        cfg = ctx.cfg
        v_th, v_reset, decay = cfg.v_threshold, cfg.v_reset, cfg.decay_input
        rest = 0.0 if v_reset is None else v_reset
        k = 1.0 / (tau_t if ctx.tau_grad else ctx.tau_value)
        derivative = SPIKE_SURROGATES[cfg.surrogate].derivative
        grad_x = torch.empty_like(grad)
        grad_k = torch.zeros((), dtype=torch.float64, device=grad.device) if ctx.tau_grad else None
        dv = torch.zeros_like(grad[0])  # dL/dV_t arriving from step t + 1
        for t in range(grad.shape[0] - 1, -1, -1):
            h = hs[t]
            u = h - v_th
            s = heaviside(u)
            sg = derivative(u, cfg.alpha)
            dv_dh = 1.0 if v_reset is None else 1.0 - s
            ds = grad[t]  # dL/dS_t: the output, plus the reset's use of S_t unless detached
            if not cfg.detach_reset:
                ds = ds + dv * (-v_th if v_reset is None else v_reset - h)
            # grouped as autograd groups SpikingJelly's graph, so float32 matches it bit for bit
            dh = ds * sg + dv * dv_dh
            grad_x[t] = dh * k if decay else dh
            if grad_k is not None:
                if t == 0:
                    v_prev: Tensor | float = rest
                else:
                    hp = hs[t - 1]
                    v_prev = lif_reset(hp, heaviside(hp - v_th), v_th, v_reset)
                leak = (x_seq[t] - (v_prev - rest)) if decay else -(v_prev - rest)
                grad_k = grad_k + (dh * leak).sum(dtype=torch.float64)
            dv = dh * (1.0 - k)
        grad_tau = None
        if grad_k is not None:  # d(1/tau)/dtau = -1/tau^2
            grad_tau = (-grad_k * k.double() ** 2).to(tau_t.dtype)
        return grad_x, grad_tau, None


def lif_multistep(x_seq: Tensor, **step_options: Any) -> Tensor:
    """Run :func:`lif_step` (its keyword options) over x_seq [T, N, ...] from V = V_reset (0 for
    the soft reset)."""
    v_reset = step_options.get("v_reset", DEFAULT_NEURON.v_reset)
    v: Tensor | float = 0.0 if v_reset is None else v_reset
    spikes = []
    for x_t in x_seq.unbind(0):
        s, v = lif_step(x_t, v, **step_options)
        spikes.append(s)
    return torch.stack(spikes, 0)


class LIF(nn.Module):
    """Multi-step LIF neuron; keeps no state between calls.

    time_steps None: input [T, N, ...]; time_steps=T: input folded [T*N, ...] (t-major). The
    other arguments are :class:`~hybridize.spiking.options.NeuronOptions` (``options`` holds them
    resolved). ``learnable_tau`` is SpikingJelly's PLIF: the parameter ``decay_logit``
    = -log(tau - 1) is the logit of the decay 1/tau = sigmoid(decay_logit).
    ``export_mode = True`` uses standard ops only; without a gradient the spikes come from the
    fused forward kernel where the kernel backend selects it (else standard ops).
    """

    def __init__(
        self,
        tau: float = DEFAULT_NEURON.tau,
        v_threshold: float = DEFAULT_NEURON.v_threshold,
        v_reset: float | None = DEFAULT_NEURON.v_reset,
        decay_input: bool = DEFAULT_NEURON.decay_input,
        detach_reset: bool = DEFAULT_NEURON.detach_reset,
        surrogate: SpikeSurrogateName = DEFAULT_NEURON.surrogate,
        alpha: float | None = None,
        learnable_tau: bool = DEFAULT_NEURON.learnable_tau,
        time_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.options = resolve_neuron(
            "LIF", tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input,
            detach_reset=detach_reset, surrogate=surrogate, alpha=alpha,
            learnable_tau=learnable_tau,
        )  # fmt: skip
        if time_steps is not None and (
            isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1
        ):
            raise SpikingConfigError(
                f"LIF: time_steps={time_steps!r} is invalid; give a positive integer or None"
            )
        self.time_steps = time_steps
        # the static options the sequence functions and fused kernels take
        self._config = LIFConfig(
            **{f.name: getattr(self.options, f.name) for f in fields(LIFConfig)}
        )
        if self.options.learnable_tau:
            self.decay_logit = nn.Parameter(torch.tensor(-math.log(self.options.tau - 1.0)))
        self.export_mode = False

    v_threshold = option_property("v_threshold")
    v_reset = option_property("v_reset")
    decay_input = option_property("decay_input")
    detach_reset = option_property("detach_reset")
    surrogate = option_property("surrogate")
    alpha = option_property("alpha")
    learnable_tau = option_property("learnable_tau")

    @property
    def tau(self) -> Tensor | float:
        """The membrane time constant (a tensor when learnable)."""
        return 1.0 / torch.sigmoid(self.decay_logit) if self.learnable_tau else self.options.tau

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # checkpoints written before the rename call the PLIF parameter "w"
        old, new = prefix + "w", prefix + "decay_logit"
        if self.learnable_tau and old in state_dict and new not in state_dict:
            state_dict[new] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        tau = f"{float(torch.as_tensor(self.tau).detach()):.4g}" + (
            " (learnable)" if self.learnable_tau else ""
        )
        return (
            f"tau={tau}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"decay_input={self.decay_input}, detach_reset={self.detach_reset}, "
            f"surrogate={self.surrogate!r}, alpha={self.alpha}, time_steps={self.time_steps}"
        )

    def forward(self, x: Tensor) -> Tensor:
        t = self.time_steps
        if t is None:
            if x.ndim < 2:
                raise SpikingConfigError(
                    f"LIF: input of shape {tuple(x.shape)} has no [T, N, ...] layout; "
                    "give a time-first tensor or set time_steps"
                )
            seq = x
        else:
            if x.ndim < 1 or x.shape[0] % t != 0:
                raise SpikingConfigError(
                    f"LIF: folded input of shape {tuple(x.shape)} is not [T*N, ...] with "
                    f"T={t}; check the twin's time_steps"
                )
            seq = x.reshape(t, x.shape[0] // t, *x.shape[1:])
        tau = self.tau
        if isinstance(tau, Tensor):
            tau = tau.to(x.dtype)
        cfg = self._config
        wants_grad = use_custom_backward(seq, self.export_mode) or (
            isinstance(tau, Tensor) and use_custom_backward(tau, self.export_mode)
        )
        # compiled off the CPU, a tau with an inexact reciprocal would move H by an ulp
        fused = use_fused(seq) and (
            kernel_backend() == "uncompiled" or divides_as_eager(tau, seq.device)
        )
        if wants_grad and fused:
            out = fused_lif(seq, tau, cfg)
        elif wants_grad:
            out = _LIFSequence.apply(seq, tau, cfg)
        elif not exporting(self.export_mode) and fused:
            out = fused_lif_spikes(seq, tau, cfg)  # eval / no grad: same spikes, one pass
        else:
            out = lif_multistep(
                seq, tau=tau, v_threshold=cfg.v_threshold, v_reset=cfg.v_reset,
                decay_input=cfg.decay_input, detach_reset=cfg.detach_reset,
            )  # fmt: skip
        out = out.reshape(x.shape) if t is not None else out
        # spikes: 0/1, savable in one bit (also without their own gradient, e.g. a frozen
        # twin's, when a later layer saves them inside a spiking branch)
        return mark_binary(out) if wants_grad or compacting() else out
