"""A later recipe target inside an earlier region wins its part; the earlier keeps the rest.

Every expected plan below is written out by hand from the model's structure.
"""

from __future__ import annotations

import pytest
import torch
from tiny_resnet import Net
from torch import nn

import hybridize
from hybridize.errors import ConversionError
from hybridize.spiking import FusionBlock

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
FINETUNE = {"twin_init": "copy", "gate": "learnable"}


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def _rows(plan) -> list[tuple[str, int, str]]:
    return [(r.region.name, r.region.target_index, r.status) for r in plan.rows]


def test_later_block_inside_an_earlier_stage_gets_its_own_settings(net):
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "stages"}},  # -> "stages"
            {"select": {"name": "stages.1"}, "encoder": {"bits": 4}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [("stages.0", 0, "converted"), ("stages.1", 1, "converted")]
    rows = {r.region.name: r for r in plan.rows}
    assert rows["stages.0"].region.split_from == "stages"
    assert rows["stages.0"].twin_report.note == "rest of stages"
    assert rows["stages.1"].region.overrides == [0]
    first, second = hybrid.get_submodule("stages.0"), hybrid.get_submodule("stages.1")
    assert isinstance(first, FusionBlock) and isinstance(second, FusionBlock)
    assert (first.encoder.bits, second.encoder.bits) == (8, 4)
    with torch.no_grad():  # learnable gates at 0: still exactly the original
        assert torch.equal(hybrid(X), net(X))


def test_later_layer_inside_an_earlier_block_leaves_the_block_its_other_layers(net):
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "blocks"}},  # -> stages.0, stages.1
            {"select": {"name": "stages.0.conv2"}, "mode": "skip"},
        ],
    }
    plan = hybridize.plan(net, recipe, example_input=X)
    assert _rows(plan) == [
        ("stages.0.conv1", 0, "skipped"),
        ("stages.0.bn1", 0, "skipped"),
        ("stages.0.act1", 0, "converted"),  # the one child of stages.0 with an activation
        ("stages.0.conv2", 1, "skipped"),
        ("stages.0.bn2", 0, "skipped"),
        ("stages.1", 0, "converted"),
    ]
    rows = {r.region.name: r for r in plan.rows}
    assert rows["stages.0.conv2"].reason == "mode skip (target 1)"
    assert rows["stages.0.conv1"].reason == "no activation inside to turn into a spiking neuron"
    assert rows["stages.0.conv2"].region.split_from == ""  # the later target's own region
    rest = [n for n in rows if n.startswith("stages.0.") and n != "stages.0.conv2"]
    assert all(rows[n].region.split_from == "stages.0" for n in rest)
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_later_module_inside_an_earlier_segment_splits_the_segment(net):
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"segment": {"start": "conv1", "end": "pool"}}},
            {"select": {"name": "bn1"}, "mode": "skip"},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    # conv1 -> [bn1] -> relu -> pool: the runs before and after bn1 stay with target 0
    assert _rows(plan) == [
        ("conv1__conv1", 0, "skipped"),
        ("bn1", 1, "skipped"),
        ("relu__pool", 0, "converted"),
    ]
    rows = {r.region.name: r for r in plan.rows}
    assert rows["relu__pool"].region.segment.entry == "bn1"
    assert rows["relu__pool"].twin_report.pools == ["pool: MaxPool2d -> AvgPool2d"]
    assert rows["relu__pool"].region.split_from == "conv1__pool"
    assert rows["bn1"].region.overrides == [0]
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_later_segment_inside_an_earlier_segment_splits_it(net):
    recipe = {
        "targets": [
            {"select": {"segment": {"start": "conv1", "end": "pool"}}},
            {"select": {"segment": {"start": "relu", "end": "relu"}}, "mode": "skip"},
        ],
    }
    plan = hybridize.plan(net, recipe, example_input=X)
    assert _rows(plan) == [
        ("conv1__bn1", 0, "skipped"),
        ("relu__relu", 1, "skipped"),
        ("pool__pool", 0, "skipped"),
    ]
    assert plan.rows[1].region.overrides == [0]


def test_later_segment_inside_an_earlier_block_takes_its_nodes(net):
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "blocks"}},  # -> stages.0, stages.1
            {"select": {"segment": {"start": "stages.0.conv1", "end": "stages.0.act1"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    # stages.0 keeps its children the segment leaves alone; its own add + relu stay ANN
    assert _rows(plan) == [
        ("stages_0_conv1__stages_0_act1", 1, "converted"),
        ("stages.0.conv2", 0, "skipped"),
        ("stages.0.bn2", 0, "skipped"),
        ("stages.1", 0, "converted"),
    ]
    rows = {r.region.name: r for r in plan.rows}
    assert rows["stages_0_conv1__stages_0_act1"].region.overrides == [0]
    assert rows["stages_0_conv1__stages_0_act1"].region.segment.entry == "pool"
    assert rows["stages.0.conv2"].region.split_from == "stages.0"
    assert rows["stages.1"].region.split_from == ""
    with torch.no_grad():  # learnable gates at 0: still exactly the original
        assert torch.equal(hybrid(X), net(X))


def test_later_conv_groups_reach_inside_an_earlier_stage_region(net):
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "stages"}},  # -> stages
            {"select": {"auto": "conv-groups"}, "encoder": {"bits": 4}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    # conv -> bn -> act [-> pool] chains: the stem and the first three layers of each block
    assert _rows(plan) == [
        ("conv1__pool", 1, "converted"),
        ("stages_0_conv1__stages_0_act1", 1, "converted"),
        ("stages.0.conv2", 0, "skipped"),
        ("stages.0.bn2", 0, "skipped"),
        ("stages_1_conv1__stages_1_act1", 1, "converted"),
        ("stages.1.conv2", 0, "skipped"),
        ("stages.1.bn2", 0, "skipped"),
    ]
    rows = {r.region.name: r for r in plan.rows}
    assert rows["conv1__pool"].region.overrides == []  # in no earlier region
    assert rows["stages_1_conv1__stages_1_act1"].region.overrides == [0]
    assert {rows[n].region.split_from for n in ("stages.0.bn2", "stages.1.conv2")} == {"stages"}
    block = hybrid.get_submodule("stages_1_conv1__stages_1_act1")
    assert isinstance(block, FusionBlock) and block.encoder.bits == 4
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_later_segment_around_a_whole_earlier_region_replaces_it(net):
    recipe = {
        "targets": [
            {"select": {"name": "stages.0.conv1"}},
            {"select": {"segment": {"start": "stages.0.conv1", "end": "stages.0.act1"}}},
        ],
    }
    plan = hybridize.plan(net, recipe, example_input=X)
    assert _rows(plan) == [("stages_0_conv1__stages_0_act1", 1, "converted")]
    assert plan.rows[0].region.overrides == [0]


def test_segment_inside_a_tracing_leaf_is_a_clear_error(net):
    recipe = {
        "trace": {"leaf_modules": ["Block"]},
        "targets": [{"select": {"segment": {"start": "stages.0.conv1", "end": "stages.0.act1"}}}],
    }
    with pytest.raises(ConversionError, match="lies inside module 'stages.0', which is traced"):
        hybridize.plan(net, recipe, example_input=X)


def test_segment_carried_to_the_final_trace_where_node_names_shift(net):
    # with both blocks traced through, stages.1's add and relu are add_1 and relu_2; in the
    # final trace stages.0 is one call and they become add and relu_1
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "blocks"}},
            {"select": {"segment": {"start": "stages.1.conv1", "end": "relu_2"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [("stages.0", 0, "converted"), ("stages_1_conv1__relu_1", 1, "converted")]
    segment = plan.rows[1].region.segment
    assert segment.entry == "stages_0" and segment.nodes[-2:] == ("add", "relu_1")
    assert plan.rows[1].region.overrides == [0]
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_segment_over_a_whole_block_beside_a_stem_target(net):
    # a stem target makes blocks without regions leaves (to find where the stem ends); the
    # block the segment replaces must not become one, or its nodes vanish from the final trace
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "stem"}},
            {"select": {"auto": "blocks"}},
            {"select": {"segment": {"start": "stages.1.conv1", "end": "relu_2"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [
        ("stem", 0, "converted"),
        ("stages.0", 1, "converted"),
        ("stages_1_conv1__relu_1", 2, "converted"),
    ]
    assert plan.rows[2].region.overrides == [1]
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_an_earlier_graph_target_is_resolved_with_the_later_regions_as_leaves(net):
    # conv-groups (target 0) does not look inside stages.1, which target 1 selects, although
    # target 2 is resolved with stages.1 opened
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"auto": "conv-groups"}},
            {"select": {"name": "stages.1"}},
            {"select": {"segment": {"start": "stages.0.conv1", "end": "stages.0.act1"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [
        ("conv1__pool", 0, "converted"),
        ("stages_0_conv1__stages_0_act1", 2, "converted"),
        ("stages.1", 1, "converted"),
    ]
    assert plan.rows[1].region.overrides == [0]
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


class _Gated(torch.nn.Module):
    """A block fx cannot trace through (control flow on a tensor's value)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.act = torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x)) if x.sum() > 0 else x


class _GatedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.act1 = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()
        self.gated = _Gated(4)
        self.hconv, self.hact = torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.gated(self.act1(self.conv1(x)))
        return self.head(self.hact(self.hconv(x)).mean((2, 3)))


def test_an_earlier_region_that_cannot_be_traced_through_stays_one_call():
    torch.manual_seed(0)
    net = _GatedNet().eval()
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"name": "gated"}},
            {"select": {"segment": {"start": "hconv", "end": "hact"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    assert _rows(hybrid.conversion_plan) == [
        ("gated", 0, "converted"),
        ("hconv__hact", 1, "converted"),
    ]
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


class _SharedActNet(Net):
    """One ReLU module called by the stem, inside both blocks and in a head conv group."""

    def __init__(self) -> None:
        super().__init__()
        self.hconv = nn.Conv2d(4, 4, 1)
        for block in self.stages:
            block.act1 = self.relu

    def forward(self, x):
        x = self.stages(self.pool(self.relu(self.bn1(self.conv1(x)))))
        return self.head(self.relu(self.hconv(x)).mean((2, 3)))


def test_a_shared_module_called_inside_opened_regions_keeps_the_root_calls_apart():
    # with the blocks traced through the head's relu call is relu_5 (after the stem's relu,
    # each block's act1 and its functional relu); in the final trace the blocks are one call
    # each and it is relu_1: the segment must be that call, not another call of the module
    torch.manual_seed(0)
    net = _SharedActNet().eval()
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"name": ["stages.0", "stages.1"]}},
            {"select": {"segment": {"start": "hconv", "end": "relu_5"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [
        ("stages.0", 0, "converted"),
        ("stages.1", 0, "converted"),
        ("hconv__relu_1", 1, "converted"),
    ]
    assert plan.rows[2].region.segment.entry == "stages_1"
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_an_earlier_segment_around_a_region_that_a_later_segment_splits(net):
    # target 0's segment holds stages.0 as one call; target 2 splits stages.0 (target 1), so
    # the final trace has its nodes instead. Target 0 keeps the runs of its nodes that neither
    # later target took and that are single-entry single-exit: none here (relu..act1 also
    # feeds the block's residual add, which needs stages.0.bn2's output as well)
    recipe = {
        "defaults": FINETUNE,
        "targets": [
            {"select": {"segment": {"start": "relu", "end": "stages.0"}}},
            {"select": {"name": "stages.0"}},
            {"select": {"segment": {"start": "stages.0.conv1", "end": "stages.0.act1"}}},
        ],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    plan = hybrid.conversion_plan
    assert _rows(plan) == [
        ("stages_0_conv1__stages_0_act1", 2, "converted"),
        ("stages.0.conv2", 1, "skipped"),
        ("stages.0.bn2", 1, "skipped"),
    ]
    assert plan.rows[0].region.overrides == [1]  # it took its part of stages.0
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))
