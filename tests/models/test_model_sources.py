"""The model-source registry (register_model_source) and adapt_head_and_stem."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch
from torch import nn

from hybridize.models import (
    BuildRequest,
    adapt_head_and_stem,
    create,
    create_from_spec,
    register_model_source,
)
from hybridize.nets import factory
from hybridize.nets.factory import check_spec


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry, so a source registered by a test does not outlive it."""
    monkeypatch.setattr(factory, "_SOURCES", dict(factory._SOURCES))
    monkeypatch.setattr(factory, "_PREFIXED", set(factory._PREFIXED))


def _toy(width: int, num_classes: int, in_chans: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, num_classes),
    )


def test_registered_source_builds_and_rebuilds_from_its_spec(registry):
    calls = []

    @register_model_source("toy")
    def build_toy(request: BuildRequest) -> tuple[nn.Module, str]:
        calls.append(request.name)
        width = int(request.name.removeprefix("w"))
        return _toy(width, request.num_classes or 10, request.in_chans or 3), "none (random init)"

    model = create("toy:w4", num_classes=3, in_chans=2)
    assert calls == ["w4"]
    assert model.hybridize_spec["source"] == "toy" and model.hybridize_spec["name"] == "w4"
    assert model.hybridize_spec["kwargs"] == {"num_classes": 3, "in_chans": 2}
    assert check_spec(model.hybridize_spec) == ("toy", "w4", {"num_classes": 3, "in_chans": 2})
    rebuilt = create_from_spec(model.hybridize_spec)
    assert calls == ["w4", "w4"]
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_unregistered_source_is_refused_and_names_stay_parsed_as_before(registry):
    with pytest.raises(factory.ModelError, match="unknown model spec source 'toy'"):
        check_spec({"source": "toy", "name": "w4", "kwargs": {}})
    # without a registered "toy", "toy:w4" is an entry point, as "timm:x" is timm's x
    assert factory._parse("toy:w4") == ("entrypoint", "toy:w4")
    assert factory._parse("timm:resnet18") == ("timm", "resnet18")
    assert factory._parse("torchvision:resnet18") == ("torchvision", "resnet18")
    assert factory._parse("has8_vgg_b16") == ("has8", "has8_vgg_b16")
    assert factory._parse("resnet18") == ("timm", "resnet18")


@pytest.mark.parametrize("source", ["timm", "toy-2", "has8"])
def test_a_source_registers_once_under_an_identifier(registry, source):
    with pytest.raises(ValueError, match="not a new identifier"):
        register_model_source(source)(lambda request: (nn.Identity(), "none"))


def test_a_builder_gets_one_read_only_request_named_inside_its_source(registry):
    received = []

    @register_model_source("toy")
    def build_toy(request: BuildRequest) -> tuple[nn.Module, str]:
        received.append(request)
        return _toy(2, 3, 1), "none (random init)"

    create("toy:w2", False, "unused.pt", 3, 1, depth=2)
    (request,) = received
    assert request == BuildRequest("w2", False, "unused.pt", 3, 1, {"depth": 2})
    with pytest.raises(FrozenInstanceError):
        request.name = "w3"  # type: ignore[misc]
    with pytest.raises(TypeError):
        request.kwargs["depth"] = 3  # type: ignore[index]


def test_a_request_holds_its_own_copy_of_the_keyword_arguments():
    given = {"depth": 2}
    request = BuildRequest("w2", kwargs=given)
    given["depth"] = 5
    assert request.kwargs == {"depth": 2}


class _TimmLike(nn.Module):
    """A head the timm way: num_classes and reset_classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.num_classes = 5
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(4, num_classes) if num_classes else nn.Identity()


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
@pytest.mark.parametrize("in_chans", [1, 6])
def test_adapt_head_and_stem_follows_timms_rule(kind, in_chans):
    torch.manual_seed(0)
    model = _TimmLike() if kind == "timm" else _toy(4, 5, 3)
    conv = model.conv if kind == "timm" else model[0]
    w3 = conv.weight.detach().clone()
    assert adapt_head_and_stem(model, 2, in_chans) is True
    assert adapt_head_and_stem(model, 2, in_chans) is False  # already adapted
    new = model.conv if kind == "timm" else model[0]
    assert new.in_channels == in_chans and new.weight.shape == (4, in_chans, 3, 3)
    if in_chans == 1:  # timm's rule: the sum over the RGB channels
        torch.testing.assert_close(new.weight, w3.sum(dim=1, keepdim=True))
    else:  # repeat RGB and rescale by 3 / in_chans
        torch.testing.assert_close(new.weight, torch.cat([w3, w3], dim=1) * (3 / in_chans))
    assert model(torch.rand(2, in_chans, 8, 8)).shape == (2, 2)


def test_adapted_stem_keeps_its_class_and_a_fresh_one_is_initialised():
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.Flatten(), nn.LazyLinear(3))
    adapt_head_and_stem(model, in_chans=1, keep_weights=False)
    assert type(model[0]) is Conv2dSame and model[0].weight.shape == (4, 1, 3, 3)
    # a fresh stem has the default init's spread, not a copy of the old weights
    bound = 1 / (1 * 3 * 3) ** 0.5
    assert model[0].weight.abs().max() <= bound
    assert model(torch.rand(1, 1, 7, 7)).shape == (1, 3)
