"""``channels_last``: the run's weights and images go NHWC; the run equals the NCHW one."""

from __future__ import annotations

import math

import torch
from torch import nn

from hybridize.train import finetune

from .conftest import COMMON, make_data, make_hybrid


def _norm_inputs_layout(model: nn.Module) -> list[bool]:
    """Whether each input a BatchNorm saw in training was channels-last (4 channels: NHWC and
    NCHW differ; a forward pre-hook)."""
    seen: list[bool] = []

    def hook(module: nn.Module, args: tuple) -> None:
        if module.training and args[0].dim() == 4:
            x = args[0]
            seen.append(x.is_contiguous(memory_format=torch.channels_last) > x.is_contiguous())

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(hook)
    return seen


def test_channels_last_run_matches_the_default_layout() -> None:
    runs = {}
    for channels_last in (False, True):
        model = make_hybrid()
        seen = _norm_inputs_layout(model)
        result = finetune(model, make_data(), epochs=2, channels_last=channels_last, **COMMON)
        runs[channels_last] = (model, seen, result.history)
    model, seen, history = runs[True]
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the ANN's convolution and the twin's (on the encoder's planes) run channels-last
    assert seen and all(seen)
    assert not any(runs[False][1])
    for a, b in zip(runs[False][2], history, strict=True):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-4)
        assert a["eval_top1"] == b["eval_top1"]
