"""Modules that cache tensors in plain attributes (timm's EfficientFormer, LeViT, EfficientViT
MSRA and TinyViT attention-bias caches) convert after an eval forward and after a trace.

Before: an eval forward left a tensor with a grad_fn in the cache, which ``copy.deepcopy``
refused ("Only Tensors created explicitly by the user ..."); a trace in eval mode left an fx
Proxy in it, which the next trace reused ("Node add referenced nonexistent value getitem_6").
"""

import pytest
import torch
from torch import fx, nn

import hybridize
from hybridize.conversion.trace import make_tracer, trace


class CachedBias(nn.Module):
    """Adds a bias table gathered from a parameter; in eval mode the gathered table is cached
    per device, as timm's attention layers do."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(2 * c))
        self.register_buffer("idx", torch.arange(c) * 2)
        self.cache: dict[str, torch.Tensor] = {}

    def bias(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.table[self.idx]
        key = str(device)
        if key not in self.cache:
            self.cache[key] = self.table[self.idx]
        return self.cache[key]

    def forward(self, x):
        return x + self.bias(x.device).view(1, -1, 1, 1)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x):
        return x + self.act(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.pos = CachedBias(c)  # outside the blocks: traced through by every trace
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        return self.head(self.blocks(self.pos(self.stem(x))).mean((2, 3)))


def _cached_values(model: nn.Module) -> list[object]:
    return [v for m in model.modules() if isinstance(m, CachedBias) for v in m.cache.values()]


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _assert_converts_exactly(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = model(x)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x).eval()
    assert sum(isinstance(m, hybridize.spiking.FusionBlock) for m in hybrid.modules()) == 2
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), expected, rtol=0, atol=0)  # gates at 0


def test_convert_after_an_eval_forward(net: Net) -> None:
    x = torch.randn(2, 3, 16, 16)
    net(x)  # with grad: the cache holds table[idx], computed from a parameter
    (cached,) = _cached_values(net)
    assert cached.grad_fn is not None
    _assert_converts_exactly(net, x)
    assert _cached_values(net) == [cached]  # the caller's model is left as it was


def test_trace_leaves_caches_as_they_were(net: Net) -> None:
    x = torch.randn(2, 3, 16, 16)
    gm = trace(net, make_tracer())
    assert _cached_values(net) == []  # no fx Proxy left behind
    torch.testing.assert_close(gm(x), net(x), rtol=0, atol=0)
    _assert_converts_exactly(net, x)


def test_trace_restores_reassigned_and_added_attributes() -> None:
    class Remembers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.last_shape = None
            self.seen: list[object] = ["before"]

        def forward(self, x):
            self.last_shape = x.shape  # a reassigned attribute
            self.extra = x.sum()  # an added one
            self.seen.append(x)  # a mutated container
            return x * 2

    root = nn.Sequential(nn.Identity(), Remembers())
    gm = trace(root, make_tracer())
    m = root[1]
    assert m.last_shape is None and m.seen == ["before"] and not hasattr(m, "extra")
    assert any(n.op == "call_function" for n in gm.graph.nodes)
    assert isinstance(gm, fx.GraphModule)


def test_timm_attention_bias_cache_after_an_eval_forward() -> None:
    # EfficientViT (MSRA): an eval forward with grad fills its attention-bias cache
    model = hybridize.create_model("efficientvit_m0", num_classes=10).eval()
    x = torch.randn(2, 3, 224, 224)
    model(x)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x).eval()
    with torch.no_grad():
        torch.testing.assert_close(hybrid(x), model(x), rtol=0, atol=0)
