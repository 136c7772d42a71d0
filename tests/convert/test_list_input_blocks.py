"""Blocks called with a list of tensors (DenseNet-style, timm's RDNet): the block cannot host a
twin (one tensor input needed); its children that take the concatenation can. ``auto: blocks``
moves to them by itself (the plan says so); a name target can select them, also beside an
``auto: stem`` target (which made the discovered blocks tracing leaves and hid every module
inside them: "called 0 times in the graph")."""

import pytest
import torch
from torch import nn

import hybridize
from hybridize.errors import ConversionError
from hybridize.recipe import load_recipe
from hybridize.spiking import FusionBlock


class DenseBlock(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(c_in, growth, 3, padding=1), nn.BatchNorm2d(growth), nn.ReLU()
        )
        self.proj = nn.Conv2d(growth, growth, 1)  # two weighted layers: a block

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(self.layers(torch.cat(x, 1)))


class DenseStage(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for block in self:
            features.append(block(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self, c: int = 4, growth: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())
        self.stage = DenseStage(DenseBlock(c, growth), DenseBlock(c + growth, growth))
        self.head = nn.Linear(c + 2 * growth, 10)

    def forward(self, x):
        return self.head(self.stage(self.stem(x)).mean((2, 3)))


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
LAYERS = {"select": {"name": "stage.*.layers"}}
STEM = {"select": {"auto": "stem"}, "required": False}


def _recipe(*targets: dict) -> dict:
    recipe = load_recipe("has8-finetune").to_dict()
    recipe["targets"] = list(targets)
    return recipe


@pytest.fixture
def net() -> DenseNet:
    torch.manual_seed(0)
    return DenseNet().eval()


def test_a_block_named_by_the_recipe_and_called_with_a_list_is_refused(net: DenseNet) -> None:
    with pytest.raises(ConversionError, match="its first argument is not a tensor"):
        hybridize.convert(net, _recipe({"select": {"name": "stage.*"}}), example_input=X)


def test_auto_blocks_moves_into_a_block_called_with_a_list(net: DenseNet) -> None:
    hybrid = hybridize.convert(net, "has8-finetune", example_input=X).eval()
    rows = {r.region.name: r.region.selector for r in hybrid.conversion_plan.converted}
    assert rows == {
        "stem_1": "auto: stem",
        "stage.0.layers": "auto: blocks: inside stage.0, which takes a list",
        "stage.1.layers": "auto: blocks: inside stage.1, which takes a list",
    }
    with torch.no_grad():
        torch.testing.assert_close(hybrid(X), net(X), rtol=0, atol=0)  # gates at 0


@pytest.mark.parametrize("targets", [(LAYERS,), (STEM, LAYERS)], ids=["alone", "after-stem"])
def test_the_module_inside_that_takes_the_concatenation_converts(
    net: DenseNet, targets: tuple[dict, ...]
) -> None:
    hybrid = hybridize.convert(net, _recipe(*targets), example_input=X).eval()
    converted = {r.region.name for r in hybrid.conversion_plan.converted}
    # the stem is a graph segment, named apart from the module ``stem`` it spans
    expected = {"stage.0.layers", "stage.1.layers"} | ({"stem_1"} if STEM in targets else set())
    assert converted == expected
    assert sum(isinstance(m, FusionBlock) for m in hybrid.modules()) == len(expected)
    with torch.no_grad():
        torch.testing.assert_close(hybrid(X), net(X), rtol=0, atol=0)  # gates at 0
