"""The normalisation inside the encoder kernels (``kernels/range_encoder.py``): planes bit for bit
those of the eager ops, and the gradient through r = (x - lo) / (hi - lo) against the chain rule
worked by hand in float64 (ties at the minimum and maximum, a constant sample, the clamp's
inclusive edges), for every range the encoder takes: per sample (minmax), the batch's (running,
training), a clamped fixed or running range (fixed, running in eval)."""

from __future__ import annotations

import shutil

import pytest
import torch

from hybridize.spiking import BitPlaneEncoder
from hybridize.spiking.kernels import kernel_backend_override as backend

# ste with raw weights: dL/dz = sum_t g_t / (2^B - 1), so dL/dr = sum_t g_t exactly
STE = dict(surrogate="ste", rescale="none", gain="raw")


def _grad(enc: BitPlaneEncoder, x: torch.Tensor, w: torch.Tensor, name: str):
    """Planes and dL/dx for L = sum(planes * w) under a kernel backend."""
    xi = x.detach().clone().requires_grad_()
    with backend(name):
        planes = enc(xi)
        (planes * w).sum().backward()
    return planes.detach(), xi.grad


def _first_plane(c: torch.Tensor) -> torch.Tensor:
    """Loss weights c on plane 0 only: with STE, dL/dr = c."""
    w = torch.zeros(8, *c.shape, dtype=c.dtype)
    w[0] = c
    return w


def _by_hand(x: torch.Tensor, c: torch.Tensor, lo: float, hi: float, *, from_data: bool):
    """dL/dx for dL/dr = c, r = (x - lo) / (hi - lo) on one group (1-d), float64."""
    s = hi - lo
    if s == 0:
        return torch.zeros_like(x)
    r = (x - lo) / s
    dx = c / s
    if from_data:  # dr/dlo = (r - 1) / s, dr/dhi = -r / s, shared among the tied elements
        at_lo, at_hi = x == lo, x == hi
        dx = dx + at_lo * (c * (r - 1)).sum() / s / at_lo.sum()
        dx = dx + at_hi * (-(c * r).sum() / s) / at_hi.sum()
    return dx


X = torch.tensor(
    [[1.0, 3.0, 1.0, 5.0, 5.0, 2.5], [4.0, 4.0, 4.0, 4.0, 4.0, 4.0]], dtype=torch.float64
)  # sample 0: two minima, two maxima; sample 1: constant (no range)
C = torch.tensor(
    [[0.5, -1.0, 2.0, 0.25, -0.75, 1.5], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], dtype=torch.float64
)


@pytest.mark.parametrize("name", ["eager", "uncompiled"])
def test_per_sample_range_gradient_by_hand(name):
    enc = BitPlaneEncoder(bits=8, normalize="minmax", **STE).double()
    planes, dx = _grad(enc, X, _first_plane(C), name)
    expected = torch.stack(
        [_by_hand(X[0], C[0], 1.0, 5.0, from_data=True), torch.zeros(6, dtype=torch.float64)]
    )
    torch.testing.assert_close(dx, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(planes[:, 1], torch.ones(8, 6, dtype=torch.float64))  # r = 1: all ones


@pytest.mark.parametrize("name", ["eager", "uncompiled"])
def test_batch_range_gradient_by_hand(name):
    enc = BitPlaneEncoder(bits=8, normalize="running", **STE).double().train()
    _, dx = _grad(enc, X, _first_plane(C), name)
    expected = _by_hand(X.flatten(), C.flatten(), 1.0, 5.0, from_data=True).reshape(X.shape)
    torch.testing.assert_close(dx, expected, rtol=1e-12, atol=1e-12)
    assert (enc.running_min.item(), enc.running_max.item()) == (1.0, 5.0)


@pytest.mark.parametrize("name", ["eager", "uncompiled"])
def test_clamped_range_gradient_by_hand(name):
    # fixed [2, 4]: elements outside get no gradient; those inside and on the edges (2, 4) do
    x = torch.tensor([[1.0, 2.0, 2.5, 4.0, 4.5, 3.0]], dtype=torch.float64)
    c = C[:1]
    enc = BitPlaneEncoder(bits=8, normalize="fixed", lo=2.0, hi=4.0, **STE).double()
    planes, dx = _grad(enc, x, _first_plane(c), name)
    inside = (x >= 2.0) & (x <= 4.0)
    torch.testing.assert_close(dx, torch.where(inside, c / 2.0, 0.0), rtol=1e-12, atol=1e-12)
    # the same clamp with a running range in eval (no gradient reaches the range)
    run = BitPlaneEncoder(bits=8, normalize="running", **STE).double().eval()
    run.running_min.fill_(2.0)
    run.running_max.fill_(4.0)
    planes_run, dx_run = _grad(run, x, _first_plane(c), name)
    assert torch.equal(planes_run, planes) and torch.equal(dx_run, dx)


@pytest.mark.parametrize("normalize", ["minmax", "running", "fixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_equals_eager_with_ties_and_channels_last(normalize, dtype):
    # the default fourier surrogate; ties at the extremes; NHWC memory order
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 4, 5, 6, generator=gen).round().to(dtype)  # many equal values
    x = x.contiguous(memory_format=torch.channels_last)
    c = torch.randn(8, *x.shape, generator=gen).to(dtype)
    kw = dict(lo=-1.5, hi=1.5) if normalize == "fixed" else {}
    enc = BitPlaneEncoder(bits=8, normalize=normalize, **kw).to(dtype)
    out = {name: _grad(enc, x, c, name) for name in ("eager", "uncompiled")}
    assert torch.equal(out["uncompiled"][0], out["eager"][0])
    assert out["uncompiled"][0].stride() == out["eager"][0].stride()  # channels-last kept
    # float32: the surrogate's cosines to rounding, summed over planes (relative to the largest)
    atol = (1e-12 if dtype == torch.float64 else 1e-6) * out["eager"][1].abs().max().item()
    torch.testing.assert_close(out["uncompiled"][1], out["eager"][1], rtol=0, atol=atol)


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler"
)
def test_compiled_batch_and_clamped_ranges_match_eager():
    gen = torch.Generator().manual_seed(12)
    x = (torch.randn(4, 3, 7, 7, generator=gen) * 2).round()
    c = torch.randn(8, *x.shape, generator=gen)
    enc = BitPlaneEncoder(bits=8)  # running: the batch's range in training, clamped in eval
    for train in (True, False):
        enc.train(train)
        out = {name: _grad(enc, x, c, name) for name in ("eager", "fused")}
        assert torch.equal(out["fused"][0], out["eager"][0])
        atol = 1e-6 * out["eager"][1].abs().max().item()
        torch.testing.assert_close(out["fused"][1], out["eager"][1], rtol=0, atol=atol)


def test_clamp_unit_is_torch_clamp_forward_with_gradient_on_the_edges():
    from hybridize.spiking.arithmetic import clamp_unit

    r = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5, float("nan")], requires_grad=True)
    out = clamp_unit(r)
    torch.testing.assert_close(out, r.detach().clamp(0.0, 1.0), equal_nan=True, rtol=0, atol=0)
    out.sum().backward()
    assert r.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    with torch.no_grad():  # without a gradient: torch's clamp itself, same values
        torch.testing.assert_close(clamp_unit(r), out.detach(), equal_nan=True, rtol=0, atol=0)


def _both(enc: BitPlaneEncoder, x: torch.Tensor) -> dict:
    gen = torch.Generator().manual_seed(13)
    w = torch.randn(enc.bits, *x.shape, generator=gen, dtype=x.dtype)
    return {name: _grad(enc, x, w, name) for name in ("eager", "uncompiled")}


@pytest.mark.parametrize("normalize", ["minmax", "running"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_infinite_input_gives_eager_gradient(normalize, bad):
    # amin/amax spread a NaN share over the sample; min()/max() only onto the tied elements
    x = torch.tensor([[0.0, 1.0, 2.0, bad], [0.0, 1.0, 2.0, 3.0]])
    out = _both(BitPlaneEncoder(bits=4, normalize=normalize), x)
    torch.testing.assert_close(*(out[n][0] for n in ("uncompiled", "eager")), equal_nan=True)
    torch.testing.assert_close(*(out[n][1] for n in ("uncompiled", "eager")), equal_nan=True)


def test_per_sample_range_of_a_transposed_input_keeps_its_strides():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(14)).transpose(0, 1)
    out = _both(BitPlaneEncoder(bits=8, normalize="minmax"), x)
    assert torch.equal(out["uncompiled"][0], out["eager"][0])
    assert out["uncompiled"][0].stride() == out["eager"][0].stride()
    torch.testing.assert_close(out["uncompiled"][1], out["eager"][1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("normalize", ["minmax", "running", "fixed", "auto"])
def test_a_0d_input_with_gradient(normalize):
    kw = dict(lo=-1.0, hi=1.0) if normalize == "fixed" else {}
    out = _both(BitPlaneEncoder(bits=4, normalize=normalize, **kw), torch.tensor(0.25))
    assert out["uncompiled"][0].shape == (4,)
    assert torch.equal(out["uncompiled"][0], out["eager"][0])
    torch.testing.assert_close(out["uncompiled"][1], out["eager"][1])
