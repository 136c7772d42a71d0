"""A model run at an image size it does not accept (a ViT's patch grid): one line naming the
shape and --img-size, from convert, export, inspect and evaluate; never a traceback."""

from __future__ import annotations

import pytest
import torch

import hybridize
from hybridize.errors import ConversionError, ExportError, HybridizeError


@pytest.fixture(scope="module")
def vit_hybrid() -> torch.nn.Module:
    torch.manual_seed(0)
    base = hybridize.create_model("test_vit", num_classes=3)  # 160 px, patch 16
    return hybridize.convert(base, "has8", example_input=torch.zeros(1, 3, 160, 160)).eval()


def test_convert_names_the_node_and_prints_nothing(capfd) -> None:
    base = hybridize.create_model("test_vit", num_classes=3)
    with pytest.raises(ConversionError) as info:
        hybridize.convert(base, "has8", example_input=torch.zeros(1, 3, 100, 100))
    message = str(info.value)
    assert "shape (1, 3, 100, 100)" in message and "divisible by patch size" in message
    assert "--img-size" in message and "\n" not in message
    assert capfd.readouterr().err == ""  # fx's ShapeProp printed a traceback here


def test_export_at_another_size_is_one_line(vit_hybrid, tmp_path) -> None:
    with pytest.raises(ExportError, match=r"does not run on an input of shape \(1, 3, 8, 8\)"):
        hybridize.export_pt2(vit_hybrid, torch.zeros(1, 3, 8, 8), tmp_path / "m.pt2")
    assert list(tmp_path.iterdir()) == []


def test_inspect_at_another_size_is_one_line(vit_hybrid) -> None:
    with pytest.raises(HybridizeError, match=r"inspect: .* shape \(2, 3, 8, 8\).*--img-size"):
        hybridize.inspect(vit_hybrid, torch.zeros(2, 3, 8, 8))


def test_evaluate_at_another_size_is_one_line(vit_hybrid) -> None:
    from torch.utils.data import TensorDataset

    images = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(HybridizeError, match=r"shape \(4, 3, 8, 8\).*--img-size"):
        hybridize.evaluate(vit_hybrid, (images, images), device="cpu", workers=0)
