"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def hybrid_checkpoint(tmp_path_factory):
    """A small has8 resnet10t hybrid saved as a checkpoint (for the CLI tests)."""
    import hybridize

    base = hybridize.create_model("resnet10t", num_classes=4)
    model = hybridize.convert(base, "has8", example_input=torch.rand(1, 3, 16, 16))
    path = tmp_path_factory.mktemp("ckpt") / "r10.safetensors"
    hybridize.save(model, path)
    return path
