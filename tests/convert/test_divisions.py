"""Regions that divide by a value computed from their input get no twin (docs/conversion.md).

Linear attention divides by ``q @ sum(k)``; with spike trains for q and k that sum is 0 and the
twin's backward is the surrogate times 1/eps. The gate-1 backward of such a hybrid must stay
finite and within the issue's bound of its ANN's largest gradient (100x; unit-gain design).
"""

import pytest
import torch
import torch.nn.functional as F
from gate_one import max_grad, max_grad_at_gate_one
from timm.models.efficientvit_mit import LiteMLA, ResidualBlock
from torch import fx, nn
from torch.fx.passes.shape_prop import _extract_tensor_metadata

import hybridize
from hybridize.conversion.divisors import input_divisions
from hybridize.spiking import FusionBlock

RATIO_BOUND = 100.0  # issue #9: largest parameter gradient within 100x of the ANN's


class LinearAttention(nn.Module):
    """ReLU linear attention with a divisive normaliser, written out (as in EfficientViT)."""

    def __init__(self, c: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.proj = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))
        self.kernel = nn.ReLU()
        self.eps = eps

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(x).flatten(2).transpose(1, 2).chunk(3, dim=-1)  # [B, HW, C] each
        q, k = self.kernel(q), self.kernel(k)
        num = q @ (k.transpose(1, 2) @ v)
        den = q @ k.sum(1, keepdim=True).transpose(1, 2)
        out = num / (den + self.eps)
        return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))


class ConvBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x + self.conv2(self.act(self.bn(self.conv1(x))))


def _attention(kind: str, c: int) -> nn.Module:
    if kind == "written":
        return LinearAttention(c)
    return ResidualBlock(LiteMLA(c, c, dim=8, norm_layer=(None, nn.BatchNorm2d)), nn.Identity())


class TinyLinearAttentionNet(nn.Module):
    def __init__(self, kind: str, c: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            ConvBlock(c), _attention(kind, c), ConvBlock(c), _attention(kind, c)
        )
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("recipe", ["has8", "has8-finetune"])
@pytest.mark.parametrize("kind", ["written", "timm"])
def test_gate_one_backward_is_finite_and_near_the_ann(kind, recipe):
    torch.manual_seed(0)
    model = TinyLinearAttentionNet(kind).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    ann_max = max_grad(model, x, target)

    hybrid = hybridize.convert(model, recipe, example_input=x)
    rows = {r.region.name: r for r in hybrid.conversion_plan.rows}
    for name in ("blocks.1", "blocks.3"):
        assert rows[name].status == "skipped" and "divides by" in rows[name].reason
    for name in ("blocks.0", "blocks.2"):  # the convolutional blocks keep their twins
        assert rows[name].status == "converted"
    blocks = [m for m in hybrid.modules() if isinstance(m, FusionBlock)]
    assert len(blocks) == 3  # stem and the two convolutional blocks
    assert max_grad_at_gate_one(hybrid, x, target) <= RATIO_BOUND * ann_max


def _meta_node(shape: tuple[int, ...]) -> fx.Node:
    node = fx.Graph().placeholder("x")
    node.meta["tensor_meta"] = _extract_tensor_metadata(torch.zeros(shape))
    return node


class _Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return self.fn(self, x)


@pytest.mark.parametrize(
    ("fn", "found"),
    [
        (lambda m, x: x / (x.sum(-1, keepdim=True) + 1e-5), True),  # a per-token normaliser
        (lambda m, x: 1 / (x.abs() + 1), True),
        (  # a norm written out, per token
            lambda m, x: (
                (x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, keepdim=True) + 1e-6)
            ),
            True,
        ),
        (lambda m, x: x.div(F.relu(x).sum(-1, keepdim=True) + 1e-5), True),
        (lambda m, x: x / 2.0, False),  # constants, parameters and shapes are not data
        (lambda m, x: x / m.weight, False),
        (lambda m, x: x / x.shape[-1], False),
        (lambda m, x: x.softmax(-1), False),  # fused: bounded gradient
        (lambda m, x: F.layer_norm(x, (4,)), False),
        (lambda m, x: F.normalize(x, dim=-1), False),
        # one value per sample (ConvNeXt-V2's response norm) or for the batch: 0 only when the
        # sample's whole activation is, and then so is the numerator
        (lambda m, x: x / (x.abs().mean(dim=(1, 2), keepdim=True) + 1e-6), False),
        (lambda m, x: x / (x.abs().max() + 1e-6), False),
    ],
)
def test_divisions_by_the_input_are_found(fn, found):
    where = input_divisions(_Lambda(fn), (_meta_node((2, 3, 4)),), {})
    assert isinstance(where, list)
    assert bool(where) is found


def test_divisions_name_the_submodule():
    where = input_divisions(
        nn.Sequential(nn.Identity(), LinearAttention(8)), (_meta_node((1, 8, 4, 4)),), {}
    )
    assert where == ["1: div"]


def test_a_region_meta_tensors_cannot_run_is_reported_not_checked():
    def data_dependent(m, x):
        return x * 2 if x.sum() > 0 else x

    where = input_divisions(_Lambda(data_dependent), (_meta_node((2, 4)),), {})
    assert isinstance(where, str) and where.startswith("not checked for divisions")


class _SizedNormBlock(nn.Module):
    """Takes the feature size as an integer side input and divides by a sum of activations."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.act = nn.ReLU()

    def forward(self, x, size):
        h, w = size
        y = self.act(self.conv1(x))
        return x + self.conv2(y / (y.sum((2, 3), keepdim=True) / (h * w) + 1e-5))


class _SizedNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList([_SizedNormBlock(c), _SizedNormBlock(c)])

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x, x.shape[2:])
        return x.mean((2, 3))


def test_a_region_with_an_integer_side_input_is_checked():
    plan = hybridize.plan(_SizedNet(), "has8", example_input=torch.randn(1, 3, 8, 8))
    rows = {r.region.name: r for r in plan.rows}
    for name in ("blocks.0", "blocks.1"):
        assert rows[name].status == "skipped"
        assert "divides by a value computed from its input (div)" in rows[name].reason


def test_global_response_norm_keeps_its_twin():
    """timm's GlobalResponseNorm (ConvNeXt-V2) divides by one value per sample."""
    from timm.layers.grn import GlobalResponseNorm

    grn = nn.Sequential(nn.Linear(8, 8), nn.GELU(), GlobalResponseNorm(8, channels_last=True))
    assert input_divisions(grn, (_meta_node((2, 4, 4, 8)),), {}) == []


def _timm_channel_norms() -> list[nn.Module]:
    from timm.layers import norm

    return [
        norm.RmsNorm2d(8),
        norm.RmsNorm2dFp32(8),
        norm.SimpleNorm2d(8),
        norm.SimpleNorm2dFp32(8),
        norm.LayerNormExp2d(8),
        nn.Sequential(Permute(0, 2, 3, 1), norm.RmsNorm(8), Permute(0, 3, 1, 2)),
        nn.Sequential(Permute(0, 2, 3, 1), norm.SimpleNorm(8), Permute(0, 3, 1, 2)),
    ]


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


@pytest.mark.parametrize("norm", _timm_channel_norms(), ids=lambda m: type(m).__name__)
def test_timm_channel_norms_are_single_calls(norm):
    """timm writes RMS / layer norms over channels out (``x * rsqrt(mean(x^2) + eps)``): the
    maths of ``F.rms_norm`` / ``F.layer_norm``, single calls for the check, so these are too;
    the same norm written out in a model's own code is still counted (above)."""
    from timm.layers import norm as timm_norm

    before = {name: getattr(timm_norm, name) for name in dir(timm_norm)}
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), norm, nn.Conv2d(8, 8, 1))
    assert input_divisions(block, (_meta_node((2, 8, 4, 4)),), {}) == []
    assert {name: getattr(timm_norm, name) for name in dir(timm_norm)} == before  # restored


def test_a_written_out_rms_norm_is_still_a_division():
    def rms_norm(m, x):
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)

    assert input_divisions(_Lambda(rms_norm), (_meta_node((2, 8, 4, 4)),), {}) == ["rsqrt"]


class RmsConvNeXtNet(nn.Module):
    """A stem and two ConvNeXt blocks (timm's, with RmsNorm2d as their norm)."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        from timm.layers.norm import RmsNorm2d
        from timm.models.convnext import ConvNeXtBlock

        self.stem = nn.Sequential(nn.Conv2d(3, c, 4, 4), RmsNorm2d(c))
        self.blocks = nn.Sequential(
            *(ConvNeXtBlock(c, conv_mlp=True, norm_layer=RmsNorm2d) for _ in range(2))
        )
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("recipe", ["has8", "has8-finetune"])
def test_rms_norm_convnext_converts_and_stays_near_the_ann(recipe):
    torch.manual_seed(0)
    model = RmsConvNeXtNet().eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    hybrid = hybridize.convert(model, recipe, example_input=x)
    converted = {r.region.name for r in hybrid.conversion_plan.converted}
    assert converted >= {"blocks.0", "blocks.1"}
    ratio = max_grad_at_gate_one(hybrid, x, target) / max_grad(model, x, target)
    assert ratio < RATIO_BOUND
