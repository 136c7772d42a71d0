"""timm blocks that take ``rope=`` (EVA-02) or return a tuple (TNT) convert: exact at gate 0,
finite gradients reaching the twins at gate 1. Two blocks and small images keep each case a few
seconds."""

from __future__ import annotations

import pytest
import torch

import hybridize
from hybridize.spiking import FusionBlock

# name -> (create kwargs, image size, the plan note of a converted block, twins with gradient)
CASES = {
    "eva02_tiny_patch14_224": ({"img_size": 28, "depth": 2}, 28, "side inputs: rope (as is)", 2),
    # the last TNT block's item 0 (pixel embedding) feeds nothing: its twin gets no gradient
    "tnt_s_patch16_224": (
        {"img_size": 32, "depth": 2},
        32,
        "side inputs: patch_embed (folded over T); "
        "tuple output: spiking adds to item 0, the other 1 pass through from the ANN",
        1,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_side_input_zoo_model(name):
    kwargs, size, note, with_grad = CASES[name]
    torch.manual_seed(0)
    model = hybridize.models.create(name, num_classes=4, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x).eval()
    plan = hybrid.conversion_plan
    assert [r.region.name for r in plan.converted] == ["blocks.0", "blocks.1"]
    assert plan.converted[0].twin_report.note == note
    with torch.no_grad():
        assert torch.equal(hybrid(x), model(x))

    blocks = [m for m in hybrid.modules() if isinstance(m, FusionBlock)]
    with torch.no_grad():
        for b in blocks:
            b.gate.fill_(1.0)
    hybrid.train()
    torch.nn.functional.cross_entropy(hybrid(x), torch.tensor([0, 1])).backward()
    grads = [p.grad for p in hybrid.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)
    reached = [
        b for b in blocks if any(p.grad is not None and p.grad.any() for p in b.twin.parameters())
    ]
    assert len(reached) == with_grad


# name -> (create kwargs, image size, converted block -> its plan note)
SHAPE_CASES = {
    # class-attention blocks: blk(x, x_cls), x_cls expanded to x.shape[0] (batch by size only)
    "cait_xxs24_224": (
        {"img_size": 32, "depth": 1, "depth_token_only": 2},
        32,
        {
            "blocks.0": "",
            "blocks_token_only.0": "side inputs: x_cls (folded over T)",
            "blocks_token_only.1": "side inputs: x_cls (folded over T)",
        },
    ),
    # serial and parallel blocks take size=(H, W) / sizes=[(H1, W1), ...]: constants
    "coat_tiny": (
        {
            "img_size": 32,
            "serial_depths": [1, 1, 1, 1],
            "parallel_depth": 1,
            "embed_dims": [16, 16, 16, 16],
            "num_heads": 8,
            "mlp_ratios": [2, 2, 2, 2],
        },
        32,
        # the parallel block returns its first input x1 as is: skipped (no spikes reach it)
        {f"serial_blocks{i}.0": "" for i in range(1, 5)},
    ),
}


@pytest.mark.parametrize("name", list(SHAPE_CASES))
def test_batch_sized_and_container_side_inputs(name):
    kwargs, size, notes = SHAPE_CASES[name]
    torch.manual_seed(0)
    model = hybridize.models.create(name, num_classes=4, **kwargs).eval()
    x = torch.randn(2, 3, size, size)
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x).eval()
    plan = hybrid.conversion_plan
    assert {r.region.name: r.twin_report.note for r in plan.converted} == notes
    if name == "coat_tiny":
        (row,) = [r for r in plan.rows if r.region.name == "parallel_blocks.0"]
        assert "no spiking neuron of its twin feeds output item 0" in row.reason
    with torch.no_grad():
        assert torch.equal(hybrid(x), model(x))
        for b in hybrid.modules():
            if isinstance(b, FusionBlock):
                b.gate.fill_(1.0)
    hybrid.train()
    out = hybrid(x)
    assert out.isfinite().all()
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in hybrid.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)
