"""ONNX parity for real architectures converted by hybridize.convert (random weights, small
inputs): resnet18 (has8), tf_efficientnet_lite0 (has8-finetune), a ViT block, replace mode."""

from __future__ import annotations

import pytest
import timm
import torch

from hybridize import convert


def _open_gates(model: torch.nn.Module) -> None:
    """Gates at 1, so the spiking path reaches the logits (has8-finetune starts them at 0)."""
    from hybridize.spiking import FusionBlock

    for m in model.modules():
        if isinstance(m, FusionBlock):
            with torch.no_grad():
                m.gate.fill_(1.0)


def _check(model: torch.nn.Module, example: torch.Tensor, tmp_path) -> None:
    from hybridize.export import export_onnx

    model.train()
    with torch.no_grad():  # realistic BN statistics and encoder ranges
        for _ in range(2):
            model(torch.rand(4, *example.shape[1:]))
    model.eval()
    report = export_onnx(model, example, tmp_path / "m.onnx", n_random=2, max_real=2)
    assert report.ok, report.lines()
    assert report.spikes_compared > 0
    assert report.top1_agreement == 1.0
    # independently of the checker: onnxruntime on a batch it never saw, against eager
    import onnxruntime as ort

    x = torch.rand(3, *example.shape[1:], generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert torch.equal(torch.from_numpy(got).argmax(1), want.argmax(1))


@pytest.mark.slow
def test_resnet18_has8(tmp_path):
    torch.manual_seed(0)
    base = timm.create_model("resnet18", pretrained=False, num_classes=10)
    example = torch.rand(2, 3, 32, 32)
    _check(convert(base, "has8", example_input=example), example, tmp_path)


@pytest.mark.slow
def test_efficientnet_lite0_has8_finetune(tmp_path):
    torch.manual_seed(0)
    base = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=10)
    example = torch.rand(2, 3, 32, 32)
    model = convert(base, "has8-finetune", example_input=example)
    _open_gates(model)
    _check(model, example, tmp_path)


@pytest.mark.slow
def test_vit_block(tmp_path):
    torch.manual_seed(0)
    base = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=8, depth=2
    )
    example = torch.rand(2, 3, 32, 32)
    recipe = {
        "name": "vit-block",
        "defaults": {"mode": "parallel", "gate": "fixed"},
        "targets": [{"select": {"name": "blocks.1.mlp"}}],  # whole blocks take attn_mask
    }
    _check(convert(base, recipe, example_input=example), example, tmp_path)


@pytest.mark.slow
def test_resnet18_replace_blocks(tmp_path):
    torch.manual_seed(0)
    base = timm.create_model("resnet18", pretrained=False, num_classes=10)
    example = torch.rand(2, 3, 32, 32)
    _check(convert(base, "replace-blocks", example_input=example), example, tmp_path)
