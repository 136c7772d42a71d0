"""Side inputs that carry the batch through its size only (CaiT's class token, expanded to
``x.shape[0]``) and constant containers of ints (CoaT's ``sizes=[(H, W), ...]``): exact at
gate 0, the hand-written composition at gate 0.5, finite gradients reaching the twins at gate 1.
"""

from __future__ import annotations

import pytest
import torch
from gate_one import assert_backward_reaches
from torch import fx, nn

import hybridize
from hybridize.conversion.calls import plain
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock

N, L, D = 2, 4, 8
X = torch.randn(N, L, D, generator=torch.Generator().manual_seed(5)) * 2


class ClassAttnBlock(nn.Module):
    """Like timm's LayerScaleBlockClassAttn: updates ``x_cls`` from ``cat((x_cls, x))``."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.fc1, self.act, self.fc2 = nn.Linear(D, 16), nn.GELU(), nn.Linear(16, D)

    def forward(self, x, x_cls):
        u = torch.cat((x_cls, x), dim=1)
        return x_cls + self.fc2(self.act(self.fc1(self.norm(u)))).mean(1, keepdim=True)


class ClassTokenNet(nn.Module):
    def __init__(self, batch_read: str = "shape") -> None:
        super().__init__()
        self.batch_read = batch_read
        self.embed = nn.Linear(D, D)
        self.cls_token = nn.Parameter(torch.randn(1, 1, D))
        self.blocks = nn.ModuleList([ClassAttnBlock(), ClassAttnBlock()])
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        x = self.embed(x)
        b = x.shape[0] if self.batch_read == "shape" else x.size(0)
        cls = self.cls_token.expand(b, -1, -1)  # the batch comes from a shape read only
        for blk in self.blocks:
            cls = blk(x, cls)
        return self.head(cls[:, 0])


class SizesBlock(nn.Module):
    """Like CoaT's serial blocks: a list of ``(H, W)`` tuples tells how to fold the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(D, 16), nn.GELU(), nn.Linear(16, D)

    def forward(self, x, sizes: list[tuple[int, int]]):
        (h, w), _ = sizes
        y = self.fc2(self.act(self.fc1(x)))
        return x + y.reshape(x.shape[0], h, w, D).flip(1).reshape(x.shape)


class SizesNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([SizesBlock(), SizesBlock()])
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x, sizes=[(2, 2), (1, 1)])
        return self.head(x.mean(1))


def _built(cls, *args) -> nn.Module:
    torch.manual_seed(0)
    return cls(*args).eval()


@pytest.mark.parametrize("batch_read", ["shape", "size"])
def test_a_side_input_sized_by_the_batch_folds(batch_read):
    net = _built(ClassTokenNet, batch_read)
    plan = hybridize.plan(net, "has8-finetune", example_input=X)
    assert [r.region.name for r in plan.converted] == ["blocks.0", "blocks.1"]
    for row in plan.rows:
        assert row.twin_report.note == "side inputs: x_cls (folded over T)"
    hybrid = hybridize.convert(net, "has8-finetune", example_input=X).eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_class_token_fusion_matches_hand_composition():
    net = _built(ClassTokenNet)
    recipe = {
        "defaults": {"twin_init": "copy", "gate": "fixed", "gate_init": 0.5},
        "targets": [{"select": {"name": "blocks.0"}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    fusion = hybrid.get_submodule("blocks.0")
    assert isinstance(fusion, FusionBlock) and fusion.branch.fold == (1,)
    block = net.blocks[0]
    enc, dec, lif = BitPlaneEncoder(), BitPlaneDecoder(), LIF()
    with torch.no_grad():
        x = net.embed(X)  # the encoded input is the first argument: the patch tokens
        cls = net.cls_token.expand(N, -1, -1)
        for e in (enc, fusion.branch.encoder):  # same calibration of the running range
            e.train()
            e(x)
            e.eval()
        planes = enc(x)  # [T, N, L, D]
        t = planes.shape[0]
        folded_cls = torch.cat([cls] * t)  # t-major copies, [T*N, 1, D]
        u = torch.cat((folded_cls, planes.flatten(0, 1)), dim=1)
        s = lif(block.fc1(block.norm(u)).unflatten(0, (t, N))).flatten(0, 1)
        twin_out = folded_cls + block.fc2(s).mean(1, keepdim=True)
        ann = block(x, cls)
        expected = ann + 0.5 * dec(twin_out.unflatten(0, (t, N)))
        got = fusion(x, cls)
    assert got.shape == (N, 1, D)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, ann)  # the spiking path does add something


def test_shape_reads_other_than_the_batch_do_not_fold():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(D, D), nn.ReLU()

        def forward(self, x, table, row):
            return self.act(self.fc(x * table)) + row

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blk = Block()
            self.table, self.row = nn.Parameter(torch.ones(L * D)), nn.Parameter(torch.ones(D))

        def forward(self, x):
            n, length, d = x.shape
            table = self.table.reshape(x.shape[-2:]) * length  # [L, D]: no batch
            row = self.row.reshape(1, 1, d).expand(x.size(0), -1, -1)  # [N, 1, D]: the batch
            return self.blk(x, table, row)

    plan = hybridize.plan(Net(), {"targets": [{"select": {"name": "blk"}}]}, example_input=X)
    assert plan.rows[0].twin_report.note == "side inputs: table (as is), row (folded over T)"


def test_plain_turns_fx_containers_into_plain_ones():
    frozen = fx.immutable_collections.immutable_list(
        [(2, 3), fx.immutable_collections.immutable_dict({"a": [1]})]
    )
    value = plain(frozen)
    assert value == [(2, 3), {"a": [1]}]
    assert type(value) is list and type(value[1]) is dict and type(value[1]["a"]) is list


def test_a_list_of_int_tuples_passes_to_the_twin():
    net = _built(SizesNet)
    plan = hybridize.plan(net, "has8-finetune", example_input=X)
    assert [r.region.name for r in plan.converted] == ["blocks.0", "blocks.1"]
    hybrid = hybridize.convert(net, "has8-finetune", example_input=X).eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


@pytest.mark.parametrize("cls", [ClassTokenNet, SizesNet])
def test_backward_at_gate_one_reaches_the_twins(cls):
    net = _built(cls)
    hybrid = hybridize.convert(net, "has8", example_input=X)
    assert_backward_reaches(hybrid, X, [f"blocks.{i}.branch.twin.fc1" for i in (0, 1)])


def test_a_tuple_item_passed_through_from_the_input_is_not_given_a_twin():
    class PassFirst(nn.Module):  # like CoaT's parallel blocks: x1 back as is
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(D, D), nn.GELU()

        def forward(self, x1, x2):
            return x1, x2 + self.act(self.fc(x2))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blk = PassFirst()

        def forward(self, x):
            a, b = self.blk(x, x * 2)
            return a + b

    plan = hybridize.plan(Net(), {"targets": [{"select": {"name": "blk"}}]}, example_input=X)
    assert plan.rows[0].status == "skipped"
    assert plan.rows[0].reason.startswith("no spiking neuron of its twin feeds output item 0")
