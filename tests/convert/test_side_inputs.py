"""Regions whose call passes side inputs (a rotary-like table, a mask, constants) and whose
block returns a tuple, checked against the fusion composition written out by hand:

    y = ann(x, *side)[0] + g * decode(twin(fold(encode(x)), *folded side)[0])
"""

from __future__ import annotations

import pytest
import torch
from gate_one import assert_backward_reaches
from torch import nn

import hybridize
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock
from hybridize.spiking.fusion import fold_over_time

N, L, D = 2, 3, 8


class SideBlock(nn.Module):
    """Takes a batch-free table (like ``rope=``), a batch-shaped mask and a constant; returns
    ``(tokens, summary)`` where only ``tokens`` has the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(D, 16), nn.GELU(), nn.Linear(16, D)
        self.proj = nn.Linear(D, D)

    def forward(self, x, rope, mask=None, scale: float = 1.0):
        h = self.fc2(self.act(self.fc1(x * rope)))
        if mask is not None:
            h = h * mask
        return x + h * scale, self.proj(x).mean(1)


class SideNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.freqs = nn.Parameter(torch.linspace(0.1, 1.0, L * D).reshape(L, D))
        self.blocks = nn.ModuleList([SideBlock(), SideBlock()])
        self.head = nn.Linear(D, 4)

    def forward(self, x):  # x [N, L, D]
        rope = torch.cos(self.freqs)  # computed from a parameter: no batch
        mask = (x.abs().sum(-1, keepdim=True) > 8.0).float()  # from the input: batch-shaped
        extra = 0.0
        for blk in self.blocks:
            x, summary = blk(x, rope, mask=mask, scale=0.5)
            extra = extra + summary
        return self.head(x.mean(1) + extra)


X = torch.randn(N, L, D, generator=torch.Generator().manual_seed(3)) * 2


@pytest.fixture
def net() -> SideNet:
    torch.manual_seed(0)
    return SideNet().eval()


def test_fold_over_time_is_t_major():
    planes = torch.arange(3 * 2 * 4.0).reshape(3, 2, 4)  # [T, N, ...]
    value = planes[0]
    folded = fold_over_time(value, 3)
    assert torch.equal(folded, torch.cat([value, value, value]))
    flat = planes.flatten(0, 1)
    for t in range(3):  # row t*N + i of both belongs to sample i
        assert torch.equal(folded[t * 2 : t * 2 + 2], value)
        assert torch.equal(flat[t * 2 : t * 2 + 2], planes[t])


def test_plan_says_which_side_inputs_fold_and_which_item_gets_the_spikes(net):
    plan = hybridize.plan(net, "has8-finetune", example_input=X)
    rows = {r.region.name: r for r in plan.rows}
    assert [r.region.name for r in plan.converted] == ["blocks.0", "blocks.1"]
    assert rows["blocks.0"].twin_report.note == (
        "side inputs: rope (as is), mask (folded over T); "
        "tuple output: spiking adds to item 0, the other 1 pass through from the ANN"
    )
    assert rows["blocks.0"].twin_report.activations == ["act: GELU"]


def test_gate_zero_is_exactly_the_original(net):
    hybrid = hybridize.convert(net, "has8-finetune", example_input=X).eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_fusion_matches_hand_composition(net):
    recipe = {
        "defaults": {"twin_init": "copy", "gate": "fixed", "gate_init": 0.5},
        "targets": [{"select": {"name": "blocks.0"}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    fusion = hybrid.get_submodule("blocks.0")
    assert isinstance(fusion, FusionBlock) and fusion.branch.fold == ("mask",)
    assert fusion.branch.out_index == 0
    block = net.blocks[0]
    rope = torch.cos(net.freqs)
    mask = (X.abs().sum(-1, keepdim=True) > 8.0).float()
    assert 0 < mask.sum() < mask.numel()  # the mask matters
    enc, dec, lif = BitPlaneEncoder(), BitPlaneDecoder(), LIF()
    with torch.no_grad():
        for e in (enc, fusion.branch.encoder):  # same calibration of the running range
            e.train()
            e(X)
            e.eval()
        planes = enc(X)  # [T, N, L, D]
        t = planes.shape[0]
        p = planes.flatten(0, 1)
        m = torch.cat([mask] * t)  # folded mask: t-major copies
        a = block.fc1(p * rope).unflatten(0, (t, N))
        s = lif(a).flatten(0, 1)
        twin_out = p + block.fc2(s) * m * 0.5
        ann_tokens, ann_summary = block(X, rope, mask=mask, scale=0.5)
        expected = ann_tokens + 0.5 * dec(twin_out.unflatten(0, (t, N)))
        got_tokens, got_summary = fusion(X, rope, mask=mask, scale=0.5)
    torch.testing.assert_close(got_tokens, expected, rtol=0, atol=1e-6)
    assert torch.equal(got_summary, ann_summary)  # the other item passes through from the ANN
    assert not torch.allclose(got_tokens, ann_tokens)  # the spiking path does add something


def test_backward_at_gate_one_reaches_the_twins(net):
    hybrid = hybridize.convert(net, "has8", example_input=X)
    assert_backward_reaches(hybrid, X, [f"blocks.{i}.branch.twin.fc1" for i in (0, 1)])


def test_side_input_with_the_batch_elsewhere_is_refused():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(D, D), nn.ReLU()

        def forward(self, x, other):
            return self.act(self.fc(x)) + other.transpose(0, 1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blk = Block()

        def forward(self, x):
            return self.blk(x, x.transpose(0, 1))  # [L, N, D]: batch on dim 1

    plan = hybridize.plan(Net(), {"targets": [{"select": {"name": "blk"}}]}, example_input=X)
    reason = plan.rows[0].reason
    assert plan.rows[0].status == "skipped"
    assert "other=" in reason and "not one tensor with the batch on dim 0" in reason


def test_replace_mode_refuses_a_tuple_output(net):
    recipe = {"defaults": {"mode": "replace"}, "targets": [{"select": {"name": "blocks.*"}}]}
    plan = hybridize.plan(net, recipe, example_input=X)
    assert all("single-tensor output" in r.reason for r in plan.rows)


def test_tuple_output_without_an_input_shaped_item_is_refused():
    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(D, 2 * D), nn.ReLU()

        def forward(self, x):
            return self.act(self.fc(x)).chunk(2, dim=1)  # two [N, ...] halves, not x's shape

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blk = Split()

        def forward(self, x):
            a, b = self.blk(x)
            return a.sum() + b.sum()

    plan = hybridize.plan(Net(), {"targets": [{"select": {"name": "blk"}}]}, example_input=X)
    assert "no tensor of the input's shape" in plan.rows[0].reason


class _SeqFirstBlock(torch.nn.Module):
    """A block whose side input holds the batch on dim 1 ([L, N, C])."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = torch.nn.Linear(c, c), torch.nn.Linear(c, c), torch.nn.GELU()

    def forward(self, x: torch.Tensor, seq_first: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x + seq_first.transpose(0, 1))))


class _SeqFirstNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(4, 8)
        self.blocks = torch.nn.ModuleList([_SeqFirstBlock(8), _SeqFirstBlock(8)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        sf = x.transpose(0, 1) * 0.5
        for block in self.blocks:
            x = block(x, sf)
        return self.head(x.mean(1))


def test_a_batch_one_example_does_not_hide_a_side_input_with_the_batch_elsewhere():
    """At batch 1 every size is a multiple of the batch: the side input [L, N, C] passed as
    foldable, the conversion 'succeeded' and every forward at batch > 1 crashed. Shapes are
    now learnt at batch 2, and the blocks are refused with the reason."""
    import hybridize
    from hybridize.errors import ConversionError

    with pytest.raises(ConversionError, match="not one tensor with the batch on dim 0"):
        hybridize.convert(
            _SeqFirstNet().eval(), "has8-finetune", example_input=torch.zeros(1, 5, 4)
        )


def test_an_even_token_count_does_not_hide_a_side_input_with_the_batch_elsewhere():
    """With 4 tokens the side input [L, N, C] has a dim 0 that is a multiple of the probe's
    batch 2; at batch 3 it stays 4, so it is not the batch: refused, not folded (before, every
    forward of the converted model crashed)."""
    from hybridize.errors import ConversionError

    for example in (torch.zeros(1, 4, 4), torch.zeros(2, 4, 4)):
        with pytest.raises(ConversionError, match="not one tensor with the batch on dim 0"):
            hybridize.convert(_SeqFirstNet().eval(), "has8-finetune", example_input=example)


def test_a_side_input_holding_the_batch_on_dim_0_still_folds_at_any_probe_batch():
    for example in (torch.zeros(1, 4, 4), torch.zeros(4, 4, 4)):
        hybrid = hybridize.convert(_BatchFirstNet().eval(), "has8-finetune", example_input=example)
        rows = hybrid.conversion_plan.rows
        assert [r.status for r in rows] == ["converted", "converted"]
        assert all("batch_first (folded over T)" in r.twin_report.note for r in rows)
        x = torch.randn(3, 4, 4)
        assert torch.equal(hybrid.eval()(x), _BatchFirstNet().eval()(x))


class _BatchFirstBlock(_SeqFirstBlock):
    def forward(self, x: torch.Tensor, batch_first: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x + batch_first)))


class _BatchFirstNet(_SeqFirstNet):
    """The same net whose blocks take a side input with the batch on dim 0 ([N, L, C])."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__()
        self.blocks = torch.nn.ModuleList([_BatchFirstBlock(8), _BatchFirstBlock(8)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        side = x * 0.5
        for block in self.blocks:
            x = block(x, side)
        return self.head(x.mean(1))
