"""The replace-blocks defaults make stacked pure spiking blocks trainable (docs/results.md,
"Pure spiking blocks"): the backward through nine replaced regions stays bounded, and every
twin gets the recipe's LIF threshold and BatchNorm momentum."""

from __future__ import annotations

import pytest
import torch

from hybridize.recipe import load_recipe
from hybridize.spiking import LIF, BitPlaneEncoder, SpikingBranch


def _replace_resnet(**encoder: object) -> torch.nn.Module:
    """The HAS-8 ResNet-b32 with every region (stem and 8 blocks) replaced, fresh twins."""
    from hybridize.models import create

    recipe = load_recipe("replace-blocks").to_dict()
    recipe["defaults"]["twin_init"] = "fresh"
    recipe["defaults"]["encoder"] = {**recipe["defaults"]["encoder"], **encoder}
    torch.manual_seed(0)
    return create("has8_resnet_b32", num_classes=10, in_chans=1, recipe=recipe)


def _stem_over_head_gradient(model: torch.nn.Module) -> float:
    """||grad of the first twin conv|| / ||grad of the head||, one train-mode backward."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=gen)
    y = torch.arange(4)
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    stem = next(p for n, p in model.named_parameters() if n.startswith("stem") and p.ndim == 4)
    return (stem.grad.double().norm() / model.fc.weight.grad.double().norm()).item()


def test_replace_blocks_backward_stays_bounded_through_nine_regions() -> None:
    model = _replace_resnet()
    assert sum(isinstance(m, SpikingBranch) for m in model.modules()) == 9
    # Calibrated gain: the stem's gradient is of the head's order (measured 0.007).
    assert _stem_over_head_gradient(model) < 10.0
    # The raw surrogate amplifies ~10^2 per region: the same model gives ~1e20.
    raw = _stem_over_head_gradient(_replace_resnet(gain="raw"))
    assert not raw < 1e6  # inf or NaN also pass: that is the failure the defaults avoid


def test_replace_blocks_twins_get_threshold_momentum_and_per_sample_range() -> None:
    model = _replace_resnet()
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    encoders = [m for m in model.modules() if isinstance(m, BitPlaneEncoder)]
    assert lifs and bns and len(encoders) == 9
    assert all(m.v_threshold == pytest.approx(0.5) for m in lifs)
    assert all(m.momentum == pytest.approx(0.5) for m in bns)
    # per-sample min-max: scaling one sample does not change its planes, nor the other's
    enc = encoders[0].train()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    scaled = x.clone()
    scaled[0] *= 0.25  # a power of two: the rescaled values are exact
    assert torch.equal(enc(x), enc(scaled))
