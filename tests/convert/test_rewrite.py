"""The fx rewrite on tiny hand-made models, checked against hand-composed spiking maths."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_resnet import Net
from torch import nn

import hybridize
from hybridize.errors import ConversionError, RecipeError
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture
def net() -> Net:
    torch.manual_seed(0)
    model = Net().eval()
    _randomise_bn(model)
    return model


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))


def test_plan_selects_stem_and_blocks(net):
    plan = hybridize.plan(net, "has8", example_input=X)
    names = [r.region.name for r in plan.converted]
    assert names == ["stem", "stages.0", "stages.1"]
    stem = plan.rows[0]
    assert stem.region.segment.nodes == ("conv1", "bn1", "relu", "pool")
    assert stem.twin_report.pools == ["pool: MaxPool2d -> AvgPool2d"]
    block = plan.rows[1]
    assert block.twin_report.sew_adds == ["add"]
    assert block.ann_params == block.twin_params - 0  # same topology, fresh weights
    assert plan.params_after == 2 * plan.params_before - sum(
        p.numel() for p in net.head.parameters()
    )


def test_convert_leaves_the_input_model_untouched(net):
    before = copy.deepcopy(net.state_dict())
    hybridize.convert(net, "has8", example_input=X)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(net.stages[0].act1, nn.ReLU)


def test_gate_zero_is_exactly_the_original(net):
    hybrid = hybridize.convert(net, "has8-finetune", example_input=X).eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), net(X))


def test_block_twin_matches_hand_composition(net):
    """has8 twin of a basic block = SEW: LIF(bn2(conv2(LIF(bn1(conv1(P)))))) + P, decoded."""
    recipe = {
        "name": "one-block",
        "defaults": {"twin_init": "copy", "gate": "fixed", "gate_init": 0.5},
        "targets": [{"select": {"name": "stages.0"}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X).eval()
    fusion = hybrid.get_submodule("stages.0")
    assert isinstance(fusion, FusionBlock)
    block = net.stages[0]
    enc, dec = BitPlaneEncoder(), BitPlaneDecoder()
    lif = LIF()
    with torch.no_grad():
        h = net.pool(net.relu(net.bn1(net.conv1(X))))
        enc.train()
        enc(h)  # one training call initialises the running range, as in the hybrid below
        fusion.branch.encoder.train()
        fusion.branch.encoder(h)
        enc.eval()
        fusion.branch.encoder.eval()
        planes = enc(h)  # [T, N, C, H, W]
        t, n = planes.shape[:2]
        p = planes.flatten(0, 1)
        a = block.bn1(block.conv1(p)).unflatten(0, (t, n))
        s1 = lif(a).flatten(0, 1)
        b = block.bn2(block.conv2(s1)).unflatten(0, (t, n))
        s2 = lif(b)
        expected = block(h) + 0.5 * dec(s2 + planes)
        got = fusion(h)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_replace_mode_is_the_branch_alone(net):
    recipe = {
        "name": "r",
        "defaults": {"mode": "replace"},
        "targets": [{"select": {"auto": "blocks"}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X)
    assert isinstance(hybrid.get_submodule("stages.1"), SpikingBranch)
    assert not any(isinstance(m, FusionBlock) for m in hybrid.modules())
    hybrid.train()
    hybrid(X).sum().backward()
    grads = [p.grad for p in hybrid.get_submodule("stages.1").parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_twin_init_copy_and_fresh(net):
    base = {"targets": [{"select": {"name": "stages.0"}}]}
    copied = hybridize.convert(net, {**base, "defaults": {"twin_init": "copy"}}, example_input=X)
    fresh = hybridize.convert(net, {**base, "defaults": {"twin_init": "fresh"}}, example_input=X)
    w = net.stages[0].conv1.weight
    assert torch.equal(copied.get_submodule("stages.0.branch.twin.conv1").weight, w)
    assert not torch.equal(fresh.get_submodule("stages.0.branch.twin.conv1").weight, w)
    # the ANN branch keeps the pretrained weights either way
    assert torch.equal(fresh.get_submodule("stages.0.ann.conv1").weight, w)


def test_fresh_twins_keep_zero_initialised_norms_at_zero(net):
    """A norm the architecture zero-initialised (the last BN of a residual branch) stays zero in
    a fresh twin; every other norm gets its default init (weight 1, running stats reset)."""
    model = copy.deepcopy(net)
    with torch.no_grad():
        model.stages[0].bn2.weight.zero_()
        model.stages[0].bn1.weight.fill_(0.5)
        model.stages[0].bn1.running_var.fill_(4.0)
    recipe = {"defaults": {"twin_init": "fresh"}, "targets": [{"select": {"name": "stages.0"}}]}
    twin = hybridize.convert(model, recipe, example_input=X).get_submodule("stages.0.branch.twin")
    assert torch.equal(twin.bn2.weight, torch.zeros(4))
    assert torch.equal(twin.bn1.weight, torch.ones(4))
    assert torch.equal(twin.bn1.running_var, torch.ones(4))


def test_fresh_levit_twins_stay_near_the_ann():
    """LeViT zero-initialises the BN after each attention projection and MLP (bn_weight_init=0).
    Reset to 1, those BNs divided the gradient by the std of a nearly silent LIF's output:
    the has8 hybrid's largest gate-1 gradient was 46.6x its ANN's at 64 px (1.4e5x at 224 px);
    with the zeros kept, 1.2x."""
    from gate_one import max_grad, max_grad_at_gate_one

    torch.manual_seed(0)
    model = hybridize.create_model("levit_128s", num_classes=4, img_size=64).eval()
    x, target = torch.randn(2, 3, 64, 64), torch.tensor([1, 2])
    ann = max_grad(model, x, target)
    torch.manual_seed(0)
    hybrid = hybridize.convert(model, "has8", example_input=x)
    assert max_grad_at_gate_one(hybrid, x, target) / ann < 10.0


def test_bn_momentum_and_pooling_keep(net):
    recipe = {
        "defaults": {"bn_momentum": 0.316, "pooling": "keep"},
        "targets": [{"select": {"segment": {"start": "conv1", "end": "pool"}}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X)
    twin = hybrid.get_submodule("conv1__pool").branch.twin
    assert twin.bn1.momentum == pytest.approx(0.316)
    assert isinstance(twin.pool, nn.MaxPool2d)
    assert isinstance(twin.relu, LIF)


def test_last_target_wins_and_skip(net):
    recipe = {
        "targets": [
            {"select": {"auto": "blocks"}},
            {"select": {"name": "stages.1"}, "mode": "skip"},
        ]
    }
    plan = hybridize.plan(net, recipe, example_input=X)
    rows = {r.region.name: r for r in plan.rows}
    assert rows["stages.0"].status == "converted"
    assert rows["stages.1"].status == "skipped"
    assert rows["stages.1"].region.overrides == [0]


def test_unmatched_target_lists_close_names(net):
    with pytest.raises(RecipeError, match=r"closest names: stages(\.0)?"):
        hybridize.plan(net, {"targets": [{"select": {"name": "stage.*"}}]}, example_input=X)


def test_segment_that_is_not_single_exit_is_refused():
    class TwoUses(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)
            self.b = nn.ReLU()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = self.a(x)
            return self.c(self.b(y)) + y

    recipe = {"targets": [{"select": {"segment": {"start": "a", "end": "b"}}}]}
    with pytest.raises(ConversionError, match="not single-exit"):
        hybridize.convert(TwoUses(), recipe, example_input=X)


def test_untraceable_model_error_names_module_and_suggests_leaf():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.conv(x)
            return x

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Branchy()
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.inner(x))

    recipe = {"targets": [{"select": {"name": "act"}}]}
    with pytest.raises(ConversionError, match=r"inner \(Branchy\).*leaf_modules: \[Branchy\]"):
        hybridize.convert(Outer(), recipe, example_input=X)


def test_functional_activation_and_functional_pool_are_rewritten():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return F.max_pool2d(F.relu(self.conv2(F.relu(self.conv(x)))), 2)

    recipe = {"targets": [{"select": {"segment": {"start": "conv", "end": "max_pool2d"}}}]}
    hybrid = hybridize.convert(Functional(), recipe, example_input=X)
    row = hybrid.conversion_plan.rows[0]
    assert [a.split(":")[1].strip() for a in row.twin_report.activations] == ["relu()", "relu()"]
    assert row.twin_report.pools == ["max_pool2d: max_pool2d -> avg_pool2d"]
    twin = hybrid.get_submodule(row.region.name).branch.twin
    targets = [n.target for n in twin.graph.nodes if n.op == "call_function"]
    assert F.avg_pool2d in targets
    assert F.max_pool2d not in targets and F.relu not in targets


def test_gate_per_channel_and_learnable(net):
    recipe = {
        "defaults": {"gate": "learnable", "gate_shape": "channel", "twin_init": "copy"},
        "targets": [{"select": {"auto": "blocks"}}],
    }
    hybrid = hybridize.convert(net, recipe, example_input=X)
    gate = hybrid.get_submodule("stages.0").gate
    assert isinstance(gate, nn.Parameter) and gate.numel() == 4 and torch.all(gate == 0)
    hybrid.train()
    hybrid(X).sum().backward()
    assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_two_training_steps_and_deepcopy(net):
    hybrid = hybridize.convert(net, "has8", example_input=X).train()
    opt = torch.optim.SGD(hybrid.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        hybrid(X).sum().backward()
        opt.step()
    twin = copy.deepcopy(hybrid).eval()
    hybrid.eval()
    with torch.no_grad():
        assert torch.equal(twin(X), hybrid(X))
    assert twin.hybridize_meta["recipe"]["name"] == "has8"


def test_hybrid_carries_the_data_config_through_deepcopy(net):
    net.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    net.num_classes = 3
    hybrid = copy.deepcopy(hybridize.convert(net, "has8", example_input=X))
    assert hybrid.pretrained_cfg == net.pretrained_cfg and hybrid.num_classes == 3
    assert hybrid.pretrained_cfg is not net.pretrained_cfg


def test_dropout_follows_train_and_eval_after_tracing():
    class Dropping(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return F.dropout(self.act(self.conv(x)), p=0.5, training=self.training)

    model = Dropping().eval()  # traced in eval mode: a frozen flag would never drop out
    recipe = {"defaults": {"gate": "learnable"}, "targets": [{"select": {"name": "act"}}]}
    hybrid = hybridize.convert(model, recipe, example_input=X)
    with torch.no_grad():
        zeros_eval = (model(X) == 0).float().mean()  # the ReLU's zeros alone
    hybrid.train()
    zeros_train = (hybrid(X) == 0).float().mean()  # plus about half of the rest
    assert zeros_train > zeros_eval + 0.15
    hybrid.eval()
    with torch.no_grad():
        assert torch.equal(hybrid(X), model(X))


def test_activation_on_a_batch_free_table_stays_ann():
    class TableBias(nn.Module):
        """A block whose bias comes from an MLP over a fixed table (like Swin-V2's)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.linspace(-1, 1, 8).reshape(8, 1))
            self.mlp = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Linear(4, 1))
            self.conv = nn.Conv2d(3, 3, 1)
            self.act = nn.ReLU()

        def forward(self, x):
            bias = self.mlp(self.table).mean()
            return self.act(self.conv(x) + bias)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = TableBias()

        def forward(self, x):
            return self.block(x)

    recipe = {"defaults": {"twin_init": "copy"}, "targets": [{"select": {"name": "block"}}]}
    hybrid = hybridize.convert(Wrap(), recipe, example_input=X)
    twin = hybrid.get_submodule("block").branch.twin
    assert isinstance(twin.get_submodule("mlp.1"), nn.ReLU) and isinstance(twin.act, LIF)
    hybrid.train()
    hybrid(X).sum().backward()


def test_block_called_with_default_constants_runs_after_conversion():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.act = nn.ReLU()

        def forward(self, x, mask=None):
            return self.act(self.conv(x))

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.blk = Masked()

        def forward(self, x):
            return self.blk(x, mask=None)

    hybrid = hybridize.convert(Outer(), {"targets": [{"select": {"name": "blk"}}]}, example_input=X)
    assert hybrid(X).shape == X.shape


def test_stem_found_before_a_stage_region(net):
    recipe = {"targets": [{"select": {"auto": "stem"}}, {"select": {"auto": "stages"}}]}
    plan = hybridize.plan(net, recipe, example_input=X)
    assert [r.region.name for r in plan.converted] == ["stem", "stages"]


def test_plan_reports_instead_of_raising_when_nothing_converts(net):
    recipe = {"defaults": {"mode": "skip"}, "targets": [{"select": {"auto": "blocks"}}]}
    plan = hybridize.plan(net, recipe, example_input=X)
    assert plan.rows and not plan.converted
    with pytest.raises(ConversionError, match="converted no region"):
        hybridize.convert(net, recipe, example_input=X)


def test_dilated_max_pool_is_kept():
    class Dilated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.act = nn.ReLU()
            self.pool = nn.MaxPool2d(3, 1, 1, dilation=2)

        def forward(self, x):
            return self.pool(self.act(self.conv(x)))

    recipe = {"targets": [{"select": {"segment": {"start": "conv", "end": "pool"}}}]}
    hybrid = hybridize.convert(Dilated(), recipe, example_input=X)
    twin = hybrid.get_submodule("conv__pool").branch.twin
    assert isinstance(twin.pool, nn.MaxPool2d)
    assert hybrid(X).shape == Dilated()(X).shape


def test_input_free_node_does_not_shadow_a_module_of_the_same_name():
    class Shadow(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.ones(3, 1, 1))
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            bias = F.relu(self.table)  # an input-free node named "relu"
            return self.relu(self.conv(x)) + bias

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.blk = Shadow()

        def forward(self, x):
            return self.blk(x)

    recipe = {"defaults": {"residual": "keep"}, "targets": [{"select": {"name": "blk"}}]}
    hybrid = hybridize.convert(Outer(), recipe, example_input=X)
    row = hybrid.conversion_plan.rows[0]
    assert row.status == "converted" and row.twin_report.activations == ["relu: ReLU"]


def test_tracing_leaves_no_constants_on_the_model():
    from hybridize.conversion.trace import make_tracer, trace

    class WithConstant(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(3, 3, 1), nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x)) / torch.tensor([2.0, 3.0, 4.0]).reshape(1, 3, 1, 1)

    model = WithConstant()
    gm = trace(model, make_tracer())
    assert hasattr(gm, "_tensor_constant0") and not hasattr(model, "_tensor_constant0")
    torch.testing.assert_close(gm(X), model(X))
    # a model traced before converting converts to the same tensor names (checkpoint keys)
    recipe = {"targets": [{"select": {"name": "act"}}]}
    fresh = hybridize.convert(WithConstant(), recipe, example_input=X)
    again = hybridize.convert(model, recipe, example_input=X)
    assert list(again.state_dict()) == list(fresh.state_dict())


def test_autowrap_entry_that_is_not_a_function_is_refused(net):
    recipe = {"targets": [{"select": {"auto": "blocks"}}], "trace": {"autowrap_functions": []}}
    recipe["trace"]["autowrap_functions"] = ["torch.pi"]  # a float
    with pytest.raises(ConversionError, match=r"'torch.pi' is a float, not a function"):
        hybridize.convert(net, recipe, example_input=X)


def test_a_segment_target_that_is_not_required_may_match_nothing(net):
    """`required: false` on a segment whose endpoints are not in this model: the target
    matches nothing (as any other selector), the rest converts; required, it is one line."""
    optional = {"select": {"segment": {"start": "stem_conv", "end": "stem_pool"}}}
    blocks = {"select": {"auto": "blocks"}}
    hybrid = hybridize.convert(
        net, {"targets": [{**optional, "required": False}, blocks]}, example_input=X
    )
    assert any(isinstance(m, FusionBlock) for m in hybrid.modules())
    with pytest.raises(ConversionError, match="segment endpoint 'stem_conv' is not a node"):
        hybridize.convert(net, {"targets": [optional, blocks]}, example_input=X)


def test_plan_rows_are_in_graph_order(net):
    """Segments starting at a module call are ordered by their node, not put first."""
    plan = hybridize.plan(net, {"targets": [{"select": {"auto": "conv-groups"}}]}, X)
    names = [row.region.name for row in plan.rows]
    assert names == [
        "conv1__pool",
        "stages_0_conv1__stages_0_act1",
        "stages_1_conv1__stages_1_act1",
    ]


def test_fresh_twins_are_fresh_also_where_fx_traced_through():
    """`twin_init: fresh` (has8): the twin's parameters are re-initialised before tracing, so
    modules fx traces through (timm's norms) and nn.MultiheadAttention (_reset_parameters)
    do not keep the pretrained values; parameters with no initialiser are named in the plan."""
    torch.manual_seed(0)
    base = hybridize.create_model("test_vit", num_classes=3)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # no pretrained value equals a default
    example = torch.zeros(1, 3, 160, 160)
    hybrid = hybridize.convert(base, "has8", example_input=example)
    blocks = [m for m in hybrid.modules() if isinstance(m, FusionBlock)]
    for block in blocks[1:]:  # the transformer blocks
        ann = dict(block.ann.named_parameters())
        same = [
            k
            for k, p in block.branch.twin.named_parameters()
            if k in ann and torch.equal(p, ann[k])
        ]
        assert same == []
    mha = nn.Sequential(nn.Linear(4, 4))
    mha.attn = nn.MultiheadAttention(4, 2)
    from hybridize.conversion.twin import _reinitialise

    before = mha.attn.in_proj_weight.clone()
    assert _reinitialise(mha) == [] and not torch.equal(mha.attn.in_proj_weight, before)
    notes = [row.twin_report.note for row in hybridize.plan(base, "has8", example).rows]
    assert "keeps the ANN's values of cls_token, pos_embed" in notes[0]


def test_a_twins_drop_path_drops_a_sample_for_all_its_steps():
    """timm's DropPath draws along dim 0, which a twin folds as [T*N]: wrapped, a sample is
    kept or dropped for all T steps together (not plane by plane), scaled as DropPath scales."""
    from timm.layers import DropPath

    from hybridize.conversion.drop_paths import DropOverTime, drop_over_time

    T, N = 8, 64
    wrapped = drop_over_time(DropPath(0.5), T)
    assert isinstance(wrapped, DropOverTime) and drop_over_time(nn.ReLU(), T) is None
    torch.manual_seed(0)
    out = wrapped.train()(torch.ones(T * N, 3)).reshape(T, N, 3)
    per_sample = out[:, :, 0]  # [T, N]
    assert torch.equal(per_sample, per_sample[:1].expand(T, N))  # the same over T
    assert set(per_sample[0].tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / 0.5
    assert torch.equal(wrapped.eval()(torch.ones(T * N, 3)), torch.ones(T * N, 3))
    base = hybridize.create_model("test_vit", num_classes=3, drop_path_rate=0.5)
    hybrid = hybridize.convert(base, "has8", example_input=torch.zeros(1, 3, 160, 160))
    assert any(isinstance(m, DropOverTime) for m in hybrid.modules())


def test_conv_groups_pass_through_identity_layers():
    """timm's ResNet blocks put Identity layers (drop_block, aa) between bn1 and act1: the
    conv-groups chain passes through them, so each block's first group is found."""
    base = hybridize.create_model("resnet10t", num_classes=3)
    plan = hybridize.plan(
        base, {"targets": [{"select": {"auto": "conv-groups"}}]}, torch.zeros(1, 3, 32, 32)
    )
    names = [row.region.name for row in plan.rows]
    assert [n for n in names if n.startswith("layer")] == [
        f"layer{i}_0_conv1__layer{i}_0_act1" for i in (1, 2, 3, 4)
    ]


def test_a_dead_pattern_in_a_required_targets_list_is_named(net):
    """`name: [stages.0, stagse.1]`: the target as a whole matches (stages.0), but the typo
    would silently leave stages.1 as ANN."""
    recipe = {"targets": [{"select": {"name": ["stages.0", "stagse.1"]}}]}
    with pytest.raises(RecipeError, match="pattern 'stagse.1' matches nothing; closest names"):
        hybridize.convert(net, recipe, example_input=X)
    optional = {"targets": [{"select": {"name": ["stages.0", "stagse.1"]}, "required": False}]}
    hybridize.convert(net, optional, example_input=X)  # not required: the live pattern converts


def test_stages_are_modules_that_run_as_one_call(net):
    """`auto: stages` on a model whose blocks sit in a ModuleList (never called as a whole)
    or directly on the model: no stage to convert (one clear line), instead of a region that
    the plan then reported as 'called 0 times'."""
    from hybridize.conversion.discover import find_stages

    assert find_stages(net) == ["stages"]  # an nn.Sequential: called as one

    class Looped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.blocks = nn.ModuleList(copy.deepcopy(net.stages[0]) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return x.mean((2, 3))

    assert find_stages(Looped()) == []
    with pytest.raises(RecipeError, match=r"target 0 \(auto: stages\) matched nothing"):
        hybridize.convert(Looped(), {"targets": [{"select": {"auto": "stages"}}]}, example_input=X)


def test_a_class_named_by_the_path_a_package_exports_it_under_matches():
    """docs/recipes.md's own example, `type: timm.layers.BatchNormAct2d`: the class is defined
    in timm.layers.norm_act, and the exported path must match as the defining one does."""
    from timm.layers import BatchNormAct2d, Mlp

    from hybridize.conversion.trace import class_matches

    assert class_matches(BatchNormAct2d(4), "timm.layers.BatchNormAct2d")
    assert class_matches(Mlp(4), "timm.layers.Mlp") and class_matches(Mlp(4), "Mlp")
    assert class_matches(Mlp(4), "timm.layers.mlp.Mlp")
    assert not class_matches(Mlp(4), "torch.nn.Linear") and not class_matches(Mlp(4), "Mlpx")
