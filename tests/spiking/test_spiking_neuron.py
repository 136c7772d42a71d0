"""LIF vs a hand-written float64 recurrence and BPTT (METHOD.md section 4), finite differences
on the smooth path, folding, statelessness, export mode, validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from autograd_graph import autograd_node_names

from hybridize.errors import HybridizeError
from hybridize.spiking import LIF, SPIKE_SURROGATES, lif_multistep, lif_step, spike_function


def _atan_grad(x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


def _reference(x, tau, v_th, v_reset, decay_input, detach_reset, c):
    """Forward recurrence and hand BPTT of L = sum_t c_t S_t with the ATan surrogate.

    Returns spikes, dL/dx and dL/d(1/tau)."""
    steps = x.shape[0]
    rest = 0.0 if v_reset is None else v_reset
    k = 1.0 / tau
    v = torch.full_like(x[0], rest)
    hs, ss, vs_prev = [], [], []
    for t in range(steps):
        vs_prev.append(v)
        h = v + (x[t] - (v - rest)) * k if decay_input else v - (v - rest) * k + x[t]
        s = (h - v_th >= 0).double()
        v = h - v_th * s if v_reset is None else h * (1 - s) + v_reset * s
        hs.append(h)
        ss.append(s)
    gx = torch.zeros_like(x)
    gk = torch.zeros((), dtype=torch.float64)
    dv = torch.zeros_like(x[0])  # dL/dV_t flowing back from step t+1
    for t in reversed(range(steps)):
        h, s, vp = hs[t], ss[t], vs_prev[t]
        sg = _atan_grad(h - v_th)
        if v_reset is None:
            dv_dh, dv_ds = torch.ones_like(h), -v_th * torch.ones_like(h)
        else:
            dv_dh, dv_ds = 1 - s, v_reset - h
        if detach_reset:
            dv_ds = torch.zeros_like(h)
        dh = c[t] * sg + dv * (dv_dh + dv_ds * sg)
        if decay_input:
            gx[t] = dh * k
            gk = gk + (dh * (x[t] - (vp - rest))).sum()
        else:
            gx[t] = dh
            gk = gk + (dh * -(vp - rest)).sum()
        dv = dh * (1 - k)
    return torch.stack(ss), gx, gk


OPTIONS = list(itertools.product([0.0, None, -0.2], [True, False], [True, False]))


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset"), OPTIONS)
@pytest.mark.parametrize("learnable", [False, True])
def test_lif_matches_hand_recurrence_and_bptt(v_reset, decay_input, detach_reset, learnable):
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(6, 4, 5, generator=gen, dtype=torch.float64) * 1.5 + 0.8).requires_grad_()
    c = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64)
    tau0 = 3.0 if learnable else 2.0
    lif = LIF(
        tau=tau0, v_threshold=1.0, v_reset=v_reset, decay_input=decay_input,
        detach_reset=detach_reset, learnable_tau=learnable,
    ).double()  # fmt: skip
    s = lif(x)
    (s * c).sum().backward()
    tau = (
        float(lif.tau.detach()) if learnable else float(lif.tau)
    )  # a float32 parameter when learnable: use its exact value
    ref_s, ref_gx, ref_gk = _reference(x.detach(), tau, 1.0, v_reset, decay_input, detach_reset, c)
    assert torch.equal(s, ref_s)
    assert 0 < s.mean() < 1  # the case really exercises spikes and resets
    assert torch.allclose(x.grad, ref_gx, rtol=1e-10, atol=1e-12)
    if learnable:
        sig = 1 / tau  # 1/tau = sigmoid(w), d(1/tau)/dw = s (1 - s)
        assert lif.decay_logit.grad.item() == pytest.approx(
            ref_gk.item() * sig * (1 - sig), rel=1e-9
        )
        assert tau == pytest.approx(tau0, rel=1e-6)


def test_spike_gradient_is_the_atan_formula() -> None:
    h = torch.tensor([0.2, 0.999, 1.0, 1.3, 3.0], dtype=torch.float64)
    x = (2.0 * h).requires_grad_()  # one step, tau 2, V = 0: H = x / 2
    s = LIF().double()(x.reshape(1, -1))
    assert s.flatten().tolist() == [0, 0, 1, 1, 1]  # Heaviside(0) = 1
    s.sum().backward()
    assert torch.allclose(x.grad, _atan_grad(h - 1.0) / 2, rtol=1e-12)


@pytest.mark.parametrize(("v_reset", "decay_input"), [(0.0, True), (None, False), (0.3, True)])
def test_membrane_and_tau_path_by_finite_differences(v_reset, decay_input) -> None:
    # With a smooth spike function (the ATan primitive) the recurrence is differentiable;
    # gradcheck compares autograd through lif_step/lif_multistep with finite differences.
    def smooth(u):
        return SPIKE_SURROGATES["atan"].primitive(u, 2.0)

    x = (torch.rand(4, 3, dtype=torch.float64) * 1.5).requires_grad_()
    tau = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)

    def run(x, tau):
        return lif_multistep(x, tau=tau, v_reset=v_reset, decay_input=decay_input, spike_fn=smooth)

    assert torch.autograd.gradcheck(run, (x, tau))


def test_tau_gradient_without_spikes_by_finite_differences() -> None:
    # no spike crossing: the membrane is smooth in tau; check the surrogate-free path of PLIF
    x = torch.rand(5, 2, 3, dtype=torch.float64) * 0.5  # H stays below V_th = 1

    def membrane(w: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        tau = 1 / torch.sigmoid(w)
        for t in range(5):
            _, v = lif_step(x[t], v, tau=tau)
        return v.sum()

    w = torch.tensor(-math.log(2.0 - 1), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(membrane(w), w)
    eps = 1e-6
    fd = (membrane(w.detach() + eps) - membrane(w.detach() - eps)) / (2 * eps)
    assert grad.item() == pytest.approx(fd.item(), rel=1e-6)
    lif = LIF(learnable_tau=True).double()
    assert torch.equal(lif(x), torch.zeros_like(x))


def test_folded_matches_unfolded() -> None:
    x = torch.randn(4, 3, 2, 5) * 2
    a, b = x.clone().requires_grad_(), x.flatten(0, 1).clone().requires_grad_()
    out_a = LIF()(a)
    out_b = LIF(time_steps=4)(b)
    assert out_b.shape == (12, 2, 5)
    assert torch.equal(out_a.flatten(0, 1), out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    assert torch.equal(a.grad.flatten(0, 1), b.grad)


def test_stateless_and_two_backward_passes() -> None:
    lif = LIF(learnable_tau=True)
    x = torch.randn(8, 4, 3) * 2
    first = lif(x)
    for _ in range(2):
        xi = x.clone().requires_grad_()
        out = lif(xi)
        out.sum().backward()
        assert torch.isfinite(xi.grad).all()
        assert torch.equal(out, first)
    assert not any(isinstance(v, torch.Tensor) for k, v in vars(lif).items() if k != "_parameters")


def test_export_mode_and_eval_match_training_forward() -> None:
    x = (torch.randn(6, 2, 7) * 2).requires_grad_()
    lif = LIF(v_reset=None)
    train = lif(x)
    assert train.grad_fn is not None
    assert "_LIFSequenceBackward" in autograd_node_names(train)
    lif.export_mode = True
    exported = lif(x)
    assert torch.equal(exported, train)
    assert not any("Function" in n or "Sequence" in n for n in autograd_node_names(exported))
    lif.export_mode = False
    lif.eval()
    with torch.no_grad():
        assert torch.equal(lif(x), train)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tau": 0.0},
        {"surrogate": "relu"},
        {"alpha": -1.0},
        {"learnable_tau": True, "tau": 1.0},
        {"time_steps": 0},
        {"v_threshold": float("nan")},
    ],
)
def test_lif_invalid_options(kwargs) -> None:
    with pytest.raises(HybridizeError) as info:
        LIF(**kwargs)
    assert "\n" not in str(info.value)


def test_folded_shape_mismatch_is_a_user_error() -> None:
    with pytest.raises(HybridizeError, match="T=3"):
        LIF(time_steps=3)(torch.zeros(4, 2))


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "rect", "triangle"])
@pytest.mark.parametrize(("v_reset", "detach_reset"), [(0.0, False), (None, True), (0.5, True)])
def test_module_backward_equals_composed_autograd(surrogate, v_reset, detach_reset) -> None:
    # the module's fused BPTT vs plain autograd through lif_step with the surrogate spike_fn
    x = torch.randn(5, 3, 4, dtype=torch.float64) * 2 + 0.5
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    lif = LIF(surrogate=surrogate, v_reset=v_reset, detach_reset=detach_reset, learnable_tau=True)
    lif = lif.double()
    w2 = lif.decay_logit.detach().clone().requires_grad_()
    c = torch.randn(5, 3, 4, dtype=torch.float64)
    (lif(a) * c).sum().backward()
    fn = spike_function(surrogate)
    out = lif_multistep(
        b, tau=1 / torch.sigmoid(w2), v_reset=v_reset, detach_reset=detach_reset, spike_fn=fn
    )
    (out * c).sum().backward()
    assert torch.allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert lif.decay_logit.grad.item() == pytest.approx(w2.grad.item(), rel=1e-9, abs=1e-12)
