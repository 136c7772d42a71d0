"""Encoder surrogate backward vs the analytic METHOD.md section 3 derivatives (float64), the
order-aware factors, per-element gradients for every rank, STE identity, spike surrogates."""

from __future__ import annotations

import math

import pytest
import torch

from hybridize.spiking import (
    ENCODER_SURROGATES,
    SPIKE_SURROGATES,
    BitPlaneDecoder,
    BitPlaneEncoder,
    order_aware_factors,
)


def _method_derivative(name: str, z: float, k: int, bits: int, alpha, offset: float) -> float:
    """d_k(z) exactly as METHOD.md section 3 writes it."""
    u = math.pi * z / 2**k
    if name == "fourier":
        harmonics = range(1, 2 * alpha, 2)
        return offset - (2 / 2**k) * sum(math.cos(n * u) for n in harmonics)
    if name == "sigsine":
        s = 1 / (1 + math.exp(-alpha * math.sin(u)))
        return s * (1 - s) * (alpha * math.pi / 2**k) * math.cos(u)
    if name == "tanhsine":
        a = alpha * math.sin(u)
        return 0.5 / math.cosh(a) ** 2 * (alpha * math.pi / 2**k) * math.cos(u)
    assert name == "ste"
    return 1 / (2**bits - 1)


def test_order_aware_factors_b8_exact() -> None:
    assert order_aware_factors(8).tolist() == [0, 1 / 64, 1 / 16, 3 / 16, 1 / 2, 5 / 4, 3, 7]


CASES = [
    ("fourier", 5, 0.5),
    ("fourier", 5, 0.0),
    ("fourier", 1, 0.5),
    ("fourier", 3, 0.0),
    ("sigsine", -10.0, 0.5),
    ("sigsine", 4.0, 0.5),
    ("tanhsine", -10.0, 0.5),
    ("ste", None, 0.5),
]


@pytest.mark.parametrize(("name", "alpha", "offset"), CASES)
@pytest.mark.parametrize("rescale", ["order-aware", "none"])
@pytest.mark.parametrize("order", ["msb", "lsb"])
@pytest.mark.parametrize("quantize", ["none", "round"])
def test_encoder_backward_matches_method_formula(name, alpha, offset, rescale, order, quantize):
    bits, lo, hi = 8, -1.0, 3.0
    gen = torch.Generator().manual_seed(7)
    x = (torch.rand(3, 4, generator=gen, dtype=torch.float64) * 4 - 1).requires_grad_()
    enc = BitPlaneEncoder(
        bits=bits, order=order, normalize="fixed", lo=lo, hi=hi, quantize=quantize,
        surrogate=name, alpha=alpha, offset=offset, rescale=rescale,
    )  # fmt: skip
    g = torch.randn(bits, 3, 4, generator=gen, dtype=torch.float64)
    (enc(x) * g).sum().backward()
    ks = list(range(bits - 1, -1, -1)) if order == "msb" else list(range(bits))
    for i in range(3):
        for j in range(4):
            z = (2**bits - 1) * (x[i, j].item() - lo) / (hi - lo)  # surrogate at unrounded z
            dz = 0.0
            for t, k in enumerate(ks):
                factor = k / 2 ** (bits - 1 - k) if rescale == "order-aware" else 1.0
                dz += (
                    g[t, i, j].item() * factor * _method_derivative(name, z, k, bits, alpha, offset)
                )
            expected = dz * (2**bits - 1) / (hi - lo)
            assert x.grad[i, j].item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4), (2, 2, 3, 3), (1, 2, 2, 2, 3)])
def test_gradients_are_per_element_for_every_rank(shape) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(*shape, generator=gen, dtype=torch.float64).requires_grad_()
    enc = BitPlaneEncoder(compat="has8-released")  # x in [0, 1]: auto keeps it as is
    g = torch.randn(8, *shape, generator=gen, dtype=torch.float64)
    (enc(x) * g).sum().backward()
    z = 255 * x.detach()
    factors = order_aware_factors(8)
    per_element = torch.zeros_like(z)
    product_of_sums_a = torch.zeros_like(z)
    product_of_sums_b = torch.zeros_like(z)
    for k in range(8):  # lsb: step t carries plane k = t
        d = 0.5 - (2 / 2**k) * sum(torch.cos(n * math.pi * z / 2**k) for n in (1, 3, 5, 7, 9))
        per_element += g[k] * factors[k] * d
        product_of_sums_a += g[k]
        product_of_sums_b += factors[k] * d
    assert torch.allclose(x.grad, 255 * per_element, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(x.grad, 255 * product_of_sums_a * product_of_sums_b)


@pytest.mark.parametrize("bits", [1, 4, 8, 12])
@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_ste_gives_identity_gradient_through_decode(bits: int, order: str) -> None:
    x = torch.rand(4, 6, dtype=torch.float64).requires_grad_()
    enc = BitPlaneEncoder(
        bits=bits, order=order, normalize="fixed", lo=0.0, hi=1.0, surrogate="ste"
    )
    BitPlaneDecoder(bits=bits, order=order)(enc(x)).sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x), rtol=0, atol=1e-12)
    # up to the normalisation: r = (x - lo) / (hi - lo) scales the gradient by 1 / (hi - lo)
    x2 = (torch.rand(4, 6, dtype=torch.float64) * 4 - 2).requires_grad_()
    enc2 = BitPlaneEncoder(
        bits=bits, order=order, normalize="fixed", lo=-2.0, hi=2.0, surrogate="ste"
    )
    BitPlaneDecoder(bits=bits, order=order)(enc2(x2)).sum().backward()
    assert torch.allclose(x2.grad, torch.full_like(x2, 0.25), rtol=0, atol=1e-12)


def test_lsb_plane_gets_no_gradient_with_order_aware_rescale() -> None:
    x = torch.rand(10, 3, dtype=torch.float64).requires_grad_()
    enc = BitPlaneEncoder(order="lsb", normalize="fixed", lo=0.0, hi=1.0)
    g = torch.zeros(8, 10, 3, dtype=torch.float64)
    g[0] = 1.0  # only the least significant plane is used
    (enc(x) * g).sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("name", sorted(ENCODER_SURROGATES))
def test_encoder_surrogate_derivative_is_derivative_of_primitive(name: str) -> None:
    spec = ENCODER_SURROGATES[name]
    alpha = spec.default_alpha or 0.0
    z = (torch.rand(50, dtype=torch.float64) * 255).requires_grad_()
    for k_int in range(8):
        k = torch.tensor(float(k_int), dtype=torch.float64)
        (grad,) = torch.autograd.grad(spec.primitive(z, k, alpha, 0.5, 8).sum(), z)
        assert torch.allclose(spec.derivative(z.detach(), k, alpha, 0.5, 8), grad, atol=1e-9)


@pytest.mark.parametrize("name", sorted(SPIKE_SURROGATES))
def test_spike_surrogate_derivative_is_derivative_of_primitive(name: str) -> None:
    spec = SPIKE_SURROGATES[name]
    x = (torch.linspace(-2, 2, 401, dtype=torch.float64) + 1e-3).requires_grad_()
    (grad,) = torch.autograd.grad(spec.primitive(x, spec.default_alpha).sum(), x)
    assert torch.allclose(spec.derivative(x.detach(), spec.default_alpha), grad, atol=1e-12)
    # a surrogate of Heaviside: the primitive goes from 0 to 1
    far = torch.tensor([-50.0, 50.0], dtype=torch.float64)
    assert torch.allclose(
        spec.primitive(far, spec.default_alpha), far.new_tensor([0, 1]), atol=0.02
    )


def test_atan_matches_method_formula() -> None:
    x = torch.linspace(-1, 1, 21, dtype=torch.float64)
    expected = [(2 / 2) / (1 + (math.pi / 2 * 2 * v) ** 2) for v in x.tolist()]
    assert torch.allclose(
        SPIKE_SURROGATES["atan"].derivative(x, 2.0), torch.tensor(expected).double()
    )
    assert SPIKE_SURROGATES["atan"].default_alpha == 2.0
    assert SPIKE_SURROGATES["sigmoid"].default_alpha == 4.0
