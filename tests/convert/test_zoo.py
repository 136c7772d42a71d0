"""Conversion across model families: gate-0 exactness, forward/backward, save/load round trip.

Each architecture is built small (num_classes=4, tiny inputs or reduced configs) so the whole
matrix stays within the CI budget; benchmarks/coverage.py runs the full timm zoo.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hybridize

# name -> (extra create kwargs, input size)
ZOO: dict[str, tuple[dict, int]] = {
    "resnet18": ({}, 32),
    "resnet50": ({}, 32),
    "resnet18d": ({}, 32),
    "vgg11": ({"mlp_ratio": 0.0625}, 32),
    "mobilenetv3_small_050": ({}, 32),
    "efficientnet_b0": ({}, 32),
    "tf_efficientnet_lite0": ({}, 32),
    "convnext_atto": ({}, 32),
    "regnetx_002": ({}, 32),
    "densenet121": ({}, 32),
    "ghostnet_050": ({}, 32),
    "repvgg_a0": ({}, 32),
    "mnasnet_050": ({}, 32),
    "lcnet_050": ({}, 32),
    "efficientvit_b0": ({}, 32),
    "poolformer_s12": ({}, 32),
    "vit_tiny_patch16_224": ({"img_size": 32}, 32),
    "deit_tiny_patch16_224": ({"img_size": 32}, 32),
    "mixer_s16_224": ({"img_size": 32}, 32),
    "resmlp_12_224": ({"img_size": 32}, 32),
    "swin_tiny_patch4_window7_224": (
        {
            "img_size": 32,
            "window_size": 2,
            "embed_dim": 24,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 1, 2, 2],
        },
        32,
    ),
    "levit_128s": ({"img_size": 64}, 64),
    "mobilevit_xxs": ({}, 64),
    "torchvision:resnet18": ({}, 32),
    "torchvision:vgg11": ({}, 32),
    "torchvision:mobilenet_v2": ({}, 32),
    "torchvision:efficientnet_b0": ({}, 32),
    "torchvision:mobilenet_v3_small": ({}, 32),
    "torchvision:shufflenet_v2_x0_5": ({}, 32),
    "custom_net:FunctionalNet": ({}, 32),
}


@pytest.fixture(autouse=True)
def _custom_models_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_converts(name, tmp_path):
    kwargs, size = ZOO[name]
    torch.manual_seed(0)
    model = hybridize.create_model(name, num_classes=4, **kwargs).eval()
    for m in model.modules():  # some families zero-init the head, which blocks all gradient
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.1)
    x = torch.randn(2, 3, size, size)

    # has8-finetune: learnable gates at 0 -> exactly the original function
    finetune = hybridize.convert(model, "has8-finetune", example_input=x).eval()
    assert finetune.conversion_plan.converted, "no region converted"
    with torch.no_grad():
        assert torch.equal(finetune(x), model(x))

    # has8: fresh twins with gate 1 -> trains end to end; twins receive gradient
    hybrid = hybridize.convert(model, "has8", example_input=x).train()
    out = hybrid(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    out.square().mean().backward()
    twin_grads = [
        p.grad for n, p in hybrid.named_parameters() if ".branch.twin." in n and p.grad is not None
    ]
    assert twin_grads and any(g.abs().sum() > 0 for g in twin_grads)

    # save/load: bit-identical outputs in eval mode
    path = tmp_path / "hybrid.safetensors"
    hybridize.save(hybrid, path)
    loaded = hybridize.load(path, trust_code=name.startswith("custom_net:"))
    hybrid.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), hybrid(x))
