"""The paper's reference networks (docs/method.md) as plain ANNs, and their HAS-8 recipe.

The hybrids are not written by hand: ``has8_recipe`` selects the regions that get a spiking twin
and ``hybridize.convert`` builds them. The ANNs alone are the baselines of the study.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hybridize.errors import ModelError
from hybridize.spiking.options import COMPAT_PRESETS

VGG_BN_MOMENTUM = math.sqrt(0.1)  # twin BN momentum of the released VGG blocks


class ConvBlock(nn.Module):
    """conv3x3 (pad 1, no bias) - BN - LeakyReLU(0.01) - AvgPool 2x2 stride 2."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.LeakyReLU(0.01)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class MLPHead(nn.Module):
    """Linear(D,1024)-LeakyReLU-Linear(1024,512)-LeakyReLU-Linear(512,K)-LeakyReLU."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 1024)
        self.act1 = nn.LeakyReLU(0.01)
        self.fc2 = nn.Linear(1024, 512)
        self.act2 = nn.LeakyReLU(0.01)
        self.fc3 = nn.Linear(512, num_classes)
        self.act3 = nn.LeakyReLU(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act3(self.fc3(self.act2(self.fc2(self.act1(self.fc1(x))))))


def _check_compat(compat: str | None) -> str | None:
    if compat is not None and compat not in COMPAT_PRESETS:
        raise ModelError(
            f"unknown compat {compat!r} for a HAS-8 model; use one of {list(COMPAT_PRESETS)} "
            "or leave it unset"
        )
    return compat


def vgg_widths(base: int, in_chans: int = 3, compat: str | None = None) -> list[int]:
    """The five conv widths: 3*b*2^i (the paper's, whatever ``in_chans``), or with
    ``compat="has8-released"`` in_chans*b*2^i as the released code builds them (equal for 3
    input channels; a 1-channel released VGG-b16 is 16, 32, 64, 128, 256)."""
    factor = in_chans if _check_compat(compat) is not None else 3
    return [factor * base * 2**i for i in range(5)]


class Has8VGG(nn.Module):
    """Five ConvBlocks of width 3*b*2^i (see :func:`vgg_widths`), adaptive average pool,
    flatten, MLP head.

    Five 2x2 poolings: inputs need at least 32x32 pixels.
    """

    def __init__(
        self, base: int = 16, num_classes: int = 10, in_chans: int = 3, compat: str | None = None
    ) -> None:
        super().__init__()
        widths = vgg_widths(base, in_chans, compat)
        blocks, cin = [], in_chans
        for w in widths:
            blocks.append(ConvBlock(cin, w))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head = MLPHead(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU after the add."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chans)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chans != out_chans:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chans, out_chans, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chans),
            )
        self.act2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act2(out + shortcut)


class Has8ResNet(nn.Module):
    """ResNet-18 layout [2,2,2,2]: stem (in_chans -> 64), stages base*(1,2,4,8), avg pool, fc.

    ``compat`` is accepted for symmetry with :class:`Has8VGG`: the released ResNet has this
    same layout for every input channel count.
    """

    layer1: nn.Sequential  # added by name in __init__
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self, base: int = 64, num_classes: int = 10, in_chans: int = 3, compat: str | None = None
    ) -> None:
        super().__init__()
        _check_compat(compat)
        self.stem = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False),
                bn=nn.BatchNorm2d(64),
                act=nn.ReLU(),
                pool=nn.MaxPool2d(3, stride=2, padding=1),
            )
        )
        cin = 64
        for i, (mult, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True)):
            width = base * mult
            stage = nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1))
            self.add_module(f"layer{i + 1}", stage)
            cin = width
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.global_pool(x)))


# name -> (constructor, base width)
HAS8_MODELS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "has8_vgg_b16": (Has8VGG, 16),
    "has8_vgg_b24": (Has8VGG, 24),
    "has8_resnet_b32": (Has8ResNet, 32),
    "has8_resnet_b64": (Has8ResNet, 64),
}


def build_has8_ann(
    name: str, num_classes: int = 10, in_chans: int = 3, compat: str | None = None
) -> nn.Module:
    """The plain ANN of a HAS-8 reference model (no twins); ``compat="has8-released"`` gives
    the released code's layout (VGG widths scale with ``in_chans``)."""
    ctor, base = HAS8_MODELS[name]
    return ctor(base=base, num_classes=num_classes, in_chans=in_chans, compat=compat)


def recipe_compat(recipe: dict[str, Any]) -> str | None:
    """The compat preset a recipe dict's default encoder asks for (None when it asks none)."""
    defaults = recipe.get("defaults") or {}
    encoder = defaults.get("encoder") if isinstance(defaults, dict) else None
    return encoder.get("compat") if isinstance(encoder, dict) else None


def has8_targets(name: str) -> list[dict[str, Any]]:
    """The regions of the reference ANN that get a twin, one exact-name target each."""
    if name.startswith("has8_vgg"):
        blocks = [
            {"select": {"name": f"features.{i}"}, "bn_momentum": VGG_BN_MOMENTUM} for i in range(5)
        ]
        return [*blocks, {"select": {"name": "head"}}]
    stem = {"select": {"name": "stem"}, "pooling": "max-to-avg"}
    blocks = [
        {"select": {"name": f"layer{s}.{b}"}, "residual": "sew"}
        for s in range(1, 5)
        for b in (0, 1)
    ]
    return [stem, *blocks]


def has8_recipe(name: str, base: str | dict[str, Any] = "has8") -> dict[str, Any]:
    """The recipe dict that turns ``build_has8_ann(name)`` into the paper's hybrid.

    ``base`` (a built-in recipe name or a recipe dict) gives the defaults (encoder, neuron,
    decoder, gate, mode...); its targets are replaced by the reference model's regions.
    """
    if name not in HAS8_MODELS:
        raise ModelError(f"unknown HAS-8 model {name!r}; choose one of {', '.join(HAS8_MODELS)}")
    if isinstance(base, dict):
        recipe = copy.deepcopy(base)
    else:
        from hybridize.recipe import load_recipe

        recipe = load_recipe(base).to_dict()
    recipe["description"] = (
        f"{recipe.get('description') or ''} (regions of the {name} reference)".strip()
    )
    recipe["targets"] = has8_targets(name)
    return recipe
