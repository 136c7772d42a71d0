"""Encoder ``gain="unit"``: the surrogate backward calibrated to the quantiser chain's slope.

Truth used here: the forward pass itself. Over r in [0, 1] the chain decode(encode(r)) rises
from decode(encode(0)) = 0 to decode(encode(1)) = 1, so its mean slope is exactly 1; the mean
of the surrogate gradient over a fine, even grid of r (float64 autograd) must match it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hybridize.errors import HybridizeError, RecipeError
from hybridize.recipe import load_recipe
from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, SpikingConfigError
from hybridize.spiking.encoder import gain_scale, order_aware_factors, plane_gradient_weights
from hybridize.spiking.surrogates import ENCODER_SURROGATES, range_mean_derivative

GRID = 1 << 16


def _chain(lo: float = 0.0, hi: float = 1.0, **options):
    enc = BitPlaneEncoder(normalize="fixed", lo=lo, hi=hi, **options)
    dec = BitPlaneDecoder(bits=enc.bits, order=enc.order)
    return enc, dec


def _mean_gradient(enc, dec, lo: float = 0.0, hi: float = 1.0) -> float:
    r = (torch.arange(GRID, dtype=torch.float64) + 0.5) / GRID
    x = (lo + (hi - lo) * r).requires_grad_(True)
    dec(enc(x)).sum().backward()
    return x.grad.mean().item()


CASES = [
    {},  # fourier alpha 5, offset 0.5, order-aware, B = 8, msb
    {"rescale": "none"},
    {"order": "lsb"},
    {"bits": 4, "alpha": 2},
    {"bits": 3, "alpha": 1, "offset": -0.3, "rescale": "none", "order": "lsb"},
    {"bits": 10, "alpha": 7, "offset": 1.0},
    {"surrogate": "ste"},
    {"surrogate": "ste", "rescale": "order-aware", "bits": 5},
    {"quantize": "none", "bits": 6},
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_unit_gain_mean_slope_equals_the_chains(options):
    enc, dec = _chain(**options, gain="unit")
    with torch.no_grad():
        ends = dec(enc(torch.tensor([0.0, 1.0], dtype=torch.float64)))
    true_slope = (ends[1] - ends[0]).item()
    assert true_slope == pytest.approx(1.0, abs=1e-12)
    assert _mean_gradient(enc, dec) == pytest.approx(true_slope, rel=1e-6)


def test_raw_gain_is_hundreds_and_unit_divides_it_out():
    raw_enc, dec = _chain()
    unit_enc, _ = _chain(gain="unit")
    raw = _mean_gradient(raw_enc, dec)
    assert 400 < raw < 700  # the released surrogate's gain per block (docs/coverage.md, cause 1)
    assert _mean_gradient(unit_enc, dec) * (1.0 / gain_scale(unit_enc.options)) == pytest.approx(
        raw, rel=1e-9
    )


def test_unit_gain_in_x_is_one_over_the_range():
    enc, dec = _chain(lo=-2.0, hi=3.0, gain="unit", rescale="none")
    assert _mean_gradient(enc, dec, lo=-2.0, hi=3.0) == pytest.approx(1.0 / 5.0, rel=1e-6)


def test_monte_carlo_over_random_inputs():
    enc, dec = _chain(gain="unit")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(200_000, dtype=torch.float64, generator=gen).requires_grad_(True)
    dec(enc(x)).sum().backward()
    g = x.grad
    stderr = g.std().item() / math.sqrt(g.numel())
    assert abs(g.mean().item() - 1.0) < 5 * stderr + 1e-9
    assert torch.isfinite(g).all() and g.abs().max() < 2.0  # no spike of hundreds anywhere


def test_backward_at_a_hand_computed_point():
    # B = 2, fourier with one harmonic, offset 1/2, no rescale, msb. Range mean of d_k over
    # z in [0, 3]: k = 0: 1/2; k = 1: 1/2 + 2 / (3 pi). Scale s = 1 / (1/2 + 2 (1/2 + 2/(3 pi))).
    # At r = 1/3 (z = 1): d_0 = 1/2 - 2 cos(pi) = 5/2, d_1 = 1/2 - cos(pi/2) = 1/2, so
    # d decode/dr = 3 * sum_k (2^k / 3) s d_k = s (5/2 + 1).
    enc, dec = _chain(bits=2, alpha=1, offset=0.5, rescale="none", gain="unit")
    s = 1.0 / (1.5 + 4.0 / (3.0 * math.pi))
    assert gain_scale(enc.options) == pytest.approx(s, rel=1e-12)
    r = torch.tensor([1.0 / 3.0], dtype=torch.float64, requires_grad=True)
    dec(enc(r)).sum().backward()
    assert r.grad.item() == pytest.approx(3.5 * s, rel=1e-12)


def test_raw_weights_unchanged_and_unit_only_scales_them():
    z = torch.zeros(3, 4)
    raw = BitPlaneEncoder(compat="has8-released").options
    assert raw.gain == "raw"
    lsb_first = order_aware_factors(8, dtype=torch.float32)
    assert torch.equal(plane_gradient_weights(raw, z).flatten(), lsb_first)
    unit = BitPlaneEncoder(gain="unit", order="lsb").options
    assert torch.allclose(
        plane_gradient_weights(unit, z).flatten(), lsb_first * gain_scale(unit), rtol=1e-6
    )


def test_range_mean_matches_quadrature_of_the_derivative():
    bits, top = 6, 63.0
    z = (torch.arange(400_000, dtype=torch.float64) + 0.5) * (top / 400_000)
    for name, spec in ENCODER_SURROGATES.items():
        alpha = spec.default_alpha or 0.0
        for k in (0, 2, 5):
            d = spec.derivative(z, torch.tensor(float(k), dtype=torch.float64), alpha, 0.5, bits)
            assert range_mean_derivative(name, k, spec.default_alpha, 0.5, bits) == pytest.approx(
                d.mean().item(), abs=2e-5
            ), (name, k)


def test_period_means_match_quadrature_over_one_period():
    k, bits = 3, 8
    period = 2.0 ** (k + 1)
    z = (torch.arange(100_000, dtype=torch.float64) + 0.5) * (period / 100_000)
    kt = torch.tensor(float(k), dtype=torch.float64)
    for name, spec in ENCODER_SURROGATES.items():
        alpha = spec.default_alpha or 0.0
        numeric = spec.derivative(z, kt, alpha, 0.5, bits).mean().item()
        assert spec.period_mean(alpha, 0.5, bits) == pytest.approx(numeric, abs=1e-9), name


@pytest.mark.parametrize(
    "options",
    [
        {"surrogate": "sigsine"},
        {"surrogate": "tanhsine"},
        {"offset": 0.0},
        {"bits": 1},  # order-aware: F_0 = 0, no gradient at all
    ],
)
def test_unit_gain_refuses_what_has_no_mean_slope(options):
    with pytest.raises(SpikingConfigError, match="gain='unit' cannot calibrate") as info:
        BitPlaneEncoder(gain="unit", **options)
    assert "\n" not in str(info.value)
    with pytest.raises(RecipeError, match="encoder.gain"):
        load_recipe(
            {"targets": [{"select": {"auto": "stem"}, "encoder": {"gain": "unit", **options}}]}
        )


def test_compat_keeps_raw_gain():
    with pytest.raises(SpikingConfigError, match="contradicts compat"):
        BitPlaneEncoder(compat="has8-released", gain="unit")
    with pytest.raises(RecipeError, match="encoder.gain"):
        load_recipe(
            {
                "targets": [
                    {
                        "select": {"auto": "stem"},
                        "encoder": {"compat": "has8-released", "gain": "unit"},
                    }
                ]
            }
        )


def test_recipe_and_encoder_agree_on_gain():
    choices = {
        "gain": [None, "raw", "unit"],
        "surrogate": [None, "fourier", "sigsine", "tanhsine", "ste"],
        "offset": [None, 0.0, -1.0],
        "rescale": [None, "none"],
        "bits": [1, 8],
    }
    disagreements = []
    for values in itertools.product(*choices.values()):
        kwargs = {k: v for k, v in zip(choices, values, strict=True) if v is not None}
        try:
            BitPlaneEncoder(**kwargs)
            module_ok = True
        except HybridizeError:
            module_ok = False
        try:
            load_recipe({"targets": [{"select": {"auto": "stem"}, "encoder": kwargs}]})
            recipe_ok = True
        except RecipeError:
            recipe_ok = False
        if module_ok != recipe_ok:
            disagreements.append((kwargs, module_ok, recipe_ok))
    assert disagreements == []
