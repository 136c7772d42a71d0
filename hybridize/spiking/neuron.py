"""LIF neuron (METHOD.md 4, SpikingJelly semantics) as pure functions with explicit state and a
stateless multi-step module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from hybridize.spiking._options import (
    SpikingConfigError,
    check_choice,
    check_number,
    use_custom_backward,
)
from hybridize.spiking.kernels import LIFConfig, fused_lif, mark_binary, use_fused
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
    surrogate: str = "atan", alpha: float | None = None, *, export_mode: bool = False
) -> SpikeFunction:
    """A spike function x -> Heaviside(x) whose backward is the named surrogate derivative.

    When no gradient is wanted (or in export mode) it is the plain standard-op Heaviside.
    """
    name = check_choice("spike_function", "surrogate", surrogate, SPIKE_SURROGATES)
    a = SPIKE_SURROGATES[name].default_alpha if alpha is None else float(alpha)

    def fn(x: Tensor) -> Tensor:
        if use_custom_backward(x, export_mode):
            return _SpikeFunction.apply(x, name, a)
        return heaviside(x)

    return fn


def lif_step(
    x_t: Tensor,
    v: Tensor | float,
    *,
    tau: Tensor | float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    spike_fn: SpikeFunction = heaviside,
) -> tuple[Tensor, Tensor]:
    """One LIF step: charge, fire, reset. Returns (spike S_t, membrane V_t).

    H = V + (X - (V - V_reset)) / tau  (decay_input)  or  H = V - (V - V_reset) / tau + X;
    S = Heaviside(H - V_th); hard reset V = H (1 - S) + V_reset S, soft (v_reset None)
    V = H - V_th S. ``detach_reset`` detaches S in the reset only.
    """
    h = _charge(x_t, v, tau, v_reset, decay_input)
    s = spike_fn(h - v_threshold)
    return s, _reset(h, s.detach() if detach_reset else s, v_threshold, v_reset)


def _charge(
    x_t: Tensor, v: Tensor | float, tau: Tensor | float, v_reset: float | None, decay_input: bool
) -> Tensor:
    rest = 0.0 if v_reset is None else v_reset
    return v + (x_t - (v - rest)) / tau if decay_input else v - (v - rest) / tau + x_t


def _reset(h: Tensor, s: Tensor, v_threshold: float, v_reset: float | None) -> Tensor:
    return h - v_threshold * s if v_reset is None else h * (1.0 - s) + v_reset * s


class _LIFSequence(torch.autograd.Function):
    """The whole T-step LIF with a hand-written BPTT backward (the surrogate at every spike).

    Forward runs the very ops of :func:`lif_step` (so values equal the export path bit for
    bit) and saves only H [T, ...] (plus X when tau needs a gradient); V_{t-1} and S_t are
    recomputed from H in backward.
    """

    @staticmethod
    def forward(ctx: Any, x_seq: Tensor, tau: Tensor | float, cfg: dict[str, Any]) -> Tensor:
        v: Tensor | float = 0.0 if cfg["v_reset"] is None else cfg["v_reset"]
        hs = torch.empty_like(x_seq)
        spikes = torch.empty_like(x_seq)
        for t in range(x_seq.shape[0]):
            h = _charge(x_seq[t], v, tau, cfg["v_reset"], cfg["decay_input"])
            s = heaviside(h - cfg["v_threshold"])
            v = _reset(h, s, cfg["v_threshold"], cfg["v_reset"])
            hs[t], spikes[t] = h, s
        tau_grad = isinstance(tau, Tensor) and ctx.needs_input_grad[1]
        ctx.save_for_backward(hs, x_seq if tau_grad else None, tau if tau_grad else None)
        ctx.cfg, ctx.tau_value, ctx.tau_grad = cfg, tau, tau_grad
        return spikes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None]:
        hs, x_seq, tau_t = ctx.saved_tensors
        cfg = ctx.cfg
        v_th, v_reset, decay = cfg["v_threshold"], cfg["v_reset"], cfg["decay_input"]
        rest = 0.0 if v_reset is None else v_reset
        k = 1.0 / (tau_t if ctx.tau_grad else ctx.tau_value)
        derivative = SPIKE_SURROGATES[cfg["surrogate"]].derivative
        grad_x = torch.empty_like(grad)
        grad_k = torch.zeros((), dtype=torch.float64, device=grad.device) if ctx.tau_grad else None
        dv = torch.zeros_like(grad[0])  # dL/dV_t arriving from step t + 1
        for t in range(grad.shape[0] - 1, -1, -1):
            h = hs[t]
            u = h - v_th
            s = heaviside(u)
            sg = derivative(u, cfg["alpha"])
            dv_dh = 1.0 if v_reset is None else 1.0 - s
            ds = grad[t]  # dL/dS_t: the output, plus the reset's use of S_t unless detached
            if not cfg["detach_reset"]:
                ds = ds + dv * (-v_th if v_reset is None else v_reset - h)
            # grouped as autograd groups SpikingJelly's graph, so float32 matches it bit for bit
            dh = ds * sg + dv * dv_dh
            grad_x[t] = dh * k if decay else dh
            if grad_k is not None:
                if t == 0:
                    v_prev: Tensor | float = rest
                else:
                    hp = hs[t - 1]
                    v_prev = _reset(hp, heaviside(hp - v_th), v_th, v_reset)
                leak = (x_seq[t] - (v_prev - rest)) if decay else -(v_prev - rest)
                grad_k = grad_k + (dh * leak).sum(dtype=torch.float64)
            dv = dh * (1.0 - k)
        grad_tau = None
        if grad_k is not None:  # d(1/tau)/dtau = -1/tau^2
            grad_tau = (-grad_k * k.double() ** 2).to(tau_t.dtype)
        return grad_x, grad_tau, None


def lif_multistep(
    x_seq: Tensor,
    *,
    tau: Tensor | float = 2.0,
    v_threshold: float = 1.0,
    v_reset: float | None = 0.0,
    decay_input: bool = True,
    detach_reset: bool = False,
    spike_fn: SpikeFunction = heaviside,
) -> Tensor:
    """Run :func:`lif_step` over x_seq [T, N, ...] from V = V_reset (0 for soft reset)."""
    v: Tensor | float = 0.0 if v_reset is None else v_reset
    spikes = []
    for x_t in x_seq.unbind(0):
        s, v = lif_step(
            x_t,
            v,
            tau=tau,
            v_threshold=v_threshold,
            v_reset=v_reset,
            decay_input=decay_input,
            detach_reset=detach_reset,
            spike_fn=spike_fn,
        )
        spikes.append(s)
    return torch.stack(spikes, 0)


class LIF(nn.Module):
    """Multi-step LIF neuron; keeps no state between calls.

    time_steps None: input [T, N, ...]; time_steps=T: input folded [T*N, ...] (t-major).
    ``learnable_tau`` is SpikingJelly's PLIF: w = -log(tau - 1), 1/tau = sigmoid(w).
    ``export_mode = True`` (or no gradient wanted) uses standard ops only.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: str = "atan",
        alpha: float | None = None,
        learnable_tau: bool = False,
        time_steps: int | None = None,
    ) -> None:
        super().__init__()
        tau = check_number("LIF", "tau", tau, positive=True)
        self.v_threshold = check_number("LIF", "v_threshold", v_threshold)
        self.v_reset = None if v_reset is None else check_number("LIF", "v_reset", v_reset)
        self.decay_input = bool(decay_input)
        self.detach_reset = bool(detach_reset)
        self.surrogate = check_choice("LIF", "surrogate", surrogate, SPIKE_SURROGATES)
        default_alpha = SPIKE_SURROGATES[self.surrogate].default_alpha
        self.alpha = (
            default_alpha if alpha is None else check_number("LIF", "alpha", alpha, positive=True)
        )
        if time_steps is not None and (
            isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1
        ):
            raise SpikingConfigError(
                f"LIF: time_steps={time_steps!r} is invalid; give a positive integer or None"
            )
        self.time_steps = time_steps
        self.learnable_tau = bool(learnable_tau)
        if self.learnable_tau:
            if tau <= 1:
                raise SpikingConfigError(
                    f"LIF: learnable tau needs an initial tau > 1 (got {tau}); raise tau"
                )
            self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))
            self._tau = None
        else:
            self._tau = tau
        self.export_mode = False

    @property
    def tau(self) -> Tensor | float:
        """The membrane time constant (a tensor when learnable)."""
        return 1.0 / torch.sigmoid(self.w) if self.learnable_tau else self._tau

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
        cfg = {
            "v_threshold": self.v_threshold,
            "v_reset": self.v_reset,
            "decay_input": self.decay_input,
            "detach_reset": self.detach_reset,
            "surrogate": self.surrogate,
            "alpha": self.alpha,
        }
        wants_grad = use_custom_backward(seq, self.export_mode) or (
            isinstance(tau, Tensor) and use_custom_backward(tau, self.export_mode)
        )
        if wants_grad and use_fused(seq):
            out = fused_lif(seq, tau, LIFConfig(**cfg))
        elif wants_grad:
            out = _LIFSequence.apply(seq, tau, cfg)
        else:
            out = lif_multistep(
                seq,
                tau=tau,
                v_threshold=self.v_threshold,
                v_reset=self.v_reset,
                decay_input=self.decay_input,
                detach_reset=self.detach_reset,
                spike_fn=heaviside,
            )
        out = out.reshape(x.shape) if t is not None else out
        return mark_binary(out) if wants_grad else out  # spikes: 0/1, savable in one byte
