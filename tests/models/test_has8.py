"""HAS-8 reference models (METHOD.md section 6): ANN layout, hand arithmetic, hybrid counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridize.models import build_has8_ann, create, has8_recipe
from hybridize.nets.has8 import BasicBlock, ConvBlock


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vgg_ann_by_hand(b: int, k: int = 10, c: int = 3) -> int:
    """conv3x3 (no bias) + BN (weight, bias) per block, then the 3-layer MLP head."""
    widths = [3 * b * 2**i for i in range(5)]
    total, cin = 0, c
    for w in widths:
        total += 9 * cin * w + 2 * w
        cin = w
    d = widths[-1]
    return total + (d * 1024 + 1024) + (1024 * 512 + 512) + (512 * k + k)


def resnet_ann_by_hand(base: int, k: int = 10, c: int = 3) -> tuple[int, int]:
    """(parameters outside the fc head, fc parameters) of the ResNet-18-layout ANN."""
    body = 49 * c * 64 + 2 * 64  # stem conv7x7 + BN
    cin = 64
    for mult, stride in zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True):
        w = base * mult
        for i in range(2):
            bin_, s = (cin, stride) if i == 0 else (w, 1)
            body += 9 * bin_ * w + 2 * w + 9 * w * w + 2 * w
            if s != 1 or bin_ != w:
                body += bin_ * w + 2 * w
        cin = w
    return body, cin * k + k


@pytest.mark.parametrize("name,b", [("has8_vgg_b16", 16), ("has8_vgg_b24", 24)])
def test_vgg_ann_matches_hand_count(name: str, b: int) -> None:
    model = build_has8_ann(name)
    assert n_params(model) == vgg_ann_by_hand(b)
    # a twin doubles every converted part: the paper's totals follow from the ANN alone
    paper = {16: 9.69e6, 24: 19.30e6}[b]
    assert round(2 * vgg_ann_by_hand(b) / 1e4) == round(paper / 1e4)


@pytest.mark.parametrize("name,b", [("has8_resnet_b32", 32), ("has8_resnet_b64", 64)])
def test_resnet_ann_matches_hand_count(name: str, b: int) -> None:
    model = build_has8_ann(name)
    body, head = resnet_ann_by_hand(b)
    assert n_params(model) == body + head
    paper = {32: 5.63e6, 64: 22.36e6}[b]
    assert round((2 * body + head) / 1e4) == round(paper / 1e4)


def test_resnet_b64_is_resnet18_in_size() -> None:
    import torchvision

    tv = torchvision.models.resnet18(num_classes=10)
    assert n_params(build_has8_ann("has8_resnet_b64")) == n_params(tv)


def test_vgg_layout() -> None:
    model = build_has8_ann("has8_vgg_b16", num_classes=7, in_chans=1)
    assert [blk.conv.out_channels for blk in model.features] == [48, 96, 192, 384, 768]
    assert model.features[0].conv.in_channels == 1
    for blk in model.features:
        assert isinstance(blk, ConvBlock)
        assert blk.conv.kernel_size == (3, 3) and blk.conv.padding == (1, 1)
        assert blk.conv.bias is None
        assert isinstance(blk.act, nn.LeakyReLU) and blk.act.negative_slope == 0.01
        assert isinstance(blk.pool, nn.AvgPool2d) and blk.pool.kernel_size == 2
    head = model.head
    assert (head.fc1.in_features, head.fc1.out_features) == (768, 1024)
    assert (head.fc2.in_features, head.fc2.out_features) == (1024, 512)
    assert (head.fc3.in_features, head.fc3.out_features) == (512, 7)
    assert isinstance(head.act3, nn.LeakyReLU)
    x = torch.randn(2, 1, 32, 32)
    assert model(x).shape == (2, 7)
    # LeakyReLU after the last Linear: negative logits are scaled by 0.01
    feats = model.flatten(model.pool(model.features(x)))
    pre = head.fc3(head.act2(head.fc2(head.act1(head.fc1(feats)))))
    torch.testing.assert_close(model(x), torch.where(pre >= 0, pre, 0.01 * pre))


@pytest.mark.parametrize(
    "name,first_has_ds", [("has8_resnet_b32", True), ("has8_resnet_b64", False)]
)
def test_resnet_layout(name: str, first_has_ds: bool) -> None:
    model = build_has8_ann(name, num_classes=5)
    stem = model.stem
    assert (stem.conv.kernel_size, stem.conv.stride, stem.conv.padding) == ((7, 7), (2, 2), (3, 3))
    assert stem.conv.out_channels == 64 and isinstance(stem.act, nn.ReLU)
    assert isinstance(stem.pool, nn.MaxPool2d)
    assert (stem.pool.kernel_size, stem.pool.stride, stem.pool.padding) == (3, 2, 1)
    base = 32 if name.endswith("32") else 64
    for i, (mult, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True)):
        stage = getattr(model, f"layer{i + 1}")
        assert len(stage) == 2 and all(isinstance(b, BasicBlock) for b in stage)
        assert stage[0].conv1.stride == (stride, stride)
        assert stage[0].conv2.out_channels == base * mult
        assert stage[1].downsample is None
        expect_ds = first_has_ds if i == 0 else True
        assert (stage[0].downsample is not None) == expect_ds
    assert model.fc.in_features == 8 * base
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_basic_block_adds_before_relu() -> None:
    torch.manual_seed(0)
    blk = BasicBlock(4, 4).eval()
    x = torch.randn(2, 4, 5, 5)
    inner = blk.bn2(blk.conv2(torch.relu(blk.bn1(blk.conv1(x)))))
    torch.testing.assert_close(blk(x), torch.relu(inner + x))


def test_plain_ann_spec() -> None:
    model = create("has8_resnet_b32", hybrid=False, num_classes=4, in_chans=2)
    assert isinstance(model, nn.Module) and model.fc.out_features == 4
    assert model.hybridize_spec["source"] == "has8"
    assert model.hybridize_spec["kwargs"] == {"num_classes": 4, "in_chans": 2, "hybrid": False}


def test_recipe_targets_and_vgg_momentum() -> None:
    vgg = has8_recipe("has8_vgg_b16")
    names = [t["select"]["name"] for t in vgg["targets"]]
    assert names == ["features.0", "features.1", "features.2", "features.3", "features.4", "head"]
    assert all(math.isclose(t["bn_momentum"], math.sqrt(0.1)) for t in vgg["targets"][:5])
    res = has8_recipe("has8_resnet_b32")
    assert [t["select"]["name"] for t in res["targets"]][:3] == ["stem", "layer1.0", "layer1.1"]
    assert len(res["targets"]) == 9
    model = build_has8_ann("has8_resnet_b32")
    for t in [*vgg["targets"], *res["targets"]]:
        owner = build_has8_ann("has8_vgg_b16") if t in vgg["targets"] else model
        owner.get_submodule(t["select"]["name"])  # every target names a real module


# ---- hybrids (need hybridize.convert) --------------------------------------------------------

PAPER_MILLIONS = {
    "has8_vgg_b16": 9.69,
    "has8_vgg_b24": 19.30,
    "has8_resnet_b32": 5.63,
    "has8_resnet_b64": 22.36,
}


def _twins(model: nn.Module) -> list[nn.Module]:
    from hybridize.spiking import FusionBlock

    return [m.branch for m in model.modules() if isinstance(m, FusionBlock)]


@pytest.mark.parametrize("name", list(PAPER_MILLIONS))
def test_hybrid_parameter_counts(name: str) -> None:
    model = create(name)
    assert round(n_params(model) / 1e6, 2) == PAPER_MILLIONS[name]


def test_vgg_hybrid_structure_and_forward() -> None:
    from hybridize.spiking import LIF

    model = create("has8_vgg_b16", num_classes=3)
    twins = _twins(model)
    assert len(twins) == 6  # five conv blocks + the head
    bns = [m for t in twins for m in t.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 5 and all(math.isclose(b.momentum, math.sqrt(0.1)) for b in bns)
    lifs = [m for t in twins for m in t.modules() if isinstance(m, LIF)]
    assert len(lifs) == 5 + 3
    assert not any(isinstance(m, nn.LeakyReLU) for t in twins for m in t.modules())
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name,downsamples", [("has8_resnet_b32", 4), ("has8_resnet_b64", 3)])
def test_resnet_hybrid_twins(name: str, downsamples: int) -> None:
    from hybridize.spiking import LIF

    model = create(name)
    twins = _twins(model)
    assert len(twins) == 9  # stem + eight basic blocks
    lifs = [m for t in twins for m in t.modules() if isinstance(m, LIF)]
    # stem LIF, two per block, one on every downsample shortcut (METHOD.md section 1)
    assert len(lifs) == 1 + 2 * 8 + downsamples
    assert not any(isinstance(m, nn.MaxPool2d) for t in twins for m in t.modules())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_hybrid_meta_rebuilds_from_ann_spec() -> None:
    model = create("has8_resnet_b32", num_classes=4, recipe="has8-released")
    meta = model.hybridize_meta
    assert meta["recipe"]["defaults"]["encoder"].get("compat") == "has8-released"
    assert [t["select"] for t in meta["recipe"]["targets"]][0] == {"name": "stem"}
    assert meta["model"]["source"] == "has8"
    assert meta["model"]["kwargs"]["hybrid"] is False
    assert model.hybridize_spec["kwargs"]["hybrid"] is True
    assert model.hybridize_spec["kwargs"]["recipe"] == "has8-released"


def test_nets_builds_the_ann_and_leaves_the_hybrid_to_models():
    from hybridize.errors import ModelError
    from hybridize.nets import BuildRequest
    from hybridize.nets.factory import create as build

    with pytest.raises(ModelError, match=r"hybrid=True is built by hybridize\.models\.create"):
        build(BuildRequest("has8_vgg_b16"))
    torch.manual_seed(0)
    ann = build(BuildRequest("has8_vgg_b16", num_classes=3, kwargs={"hybrid": False}))
    torch.manual_seed(0)
    hybrid = create("has8_vgg_b16", num_classes=3)
    # the hybrid converts that same ANN: its recorded base spec is the ANN's
    assert hybrid.hybridize_meta["model"] == ann.hybridize_spec
    assert hybrid.hybridize_spec == {
        **ann.hybridize_spec,
        "kwargs": {**ann.hybridize_spec["kwargs"], "hybrid": True, "recipe": "has8"},
    }


def test_converting_a_hybrid_again_is_refused():
    import hybridize
    from hybridize.errors import ConversionError

    hybrid = create("has8_vgg_b16", num_classes=3)
    with pytest.raises(ConversionError, match=r"already a hybrid .*hybrid=False"):
        hybridize.convert(hybrid, "has8", example_input=torch.zeros(1, 3, 32, 32))


def test_hybrid_flag_for_names_without_a_reference_hybrid():
    from hybridize.errors import ModelError

    torch.manual_seed(0)
    plain = create("test_resnet", num_classes=3, hybrid=False)
    torch.manual_seed(0)
    default = create("test_resnet", num_classes=3)
    assert plain.hybridize_spec == default.hybridize_spec
    assert all(
        torch.equal(a, b)
        for a, b in zip(plain.state_dict().values(), default.state_dict().values(), strict=True)
    )
    with pytest.raises(ModelError, match="no reference hybrid"):
        create("test_resnet", num_classes=3, hybrid=True)


def test_cli_convert_of_a_has8_name_converts_the_plain_network_once(tmp_path, capsys):
    import hybridize
    from hybridize_cli.main import main_entry

    out = tmp_path / "vgg.safetensors"
    argv = ["convert", "has8_vgg_b16", "--recipe", "has8", "--no-pretrained"]
    code = main_entry([*argv, "--num-classes", "3", "--img-size", "32", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    loaded = hybridize.load(out)
    plain = create("has8_vgg_b16", num_classes=3, hybrid=False)
    direct = hybridize.convert(plain, "has8", example_input=torch.zeros(1, 3, 32, 32))
    # a second conversion of the reference hybrid would nest twins and add parameters
    assert n_params(loaded) == n_params(direct) < 2 * n_params(plain)
    assert len(_twins(loaded)) == len(_twins(direct))


def test_unknown_has8_name_is_a_model_error() -> None:
    from hybridize.errors import ModelError
    from hybridize.nets.has8 import has8_recipe

    with pytest.raises(ModelError, match="unknown HAS-8 model 'resnet_b99'; choose one of"):
        has8_recipe("resnet_b99")
