"""Presets, option validation, parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridize.train import (
    TrainError,
    finetune,
    param_groups,
    resolve_config,
    spiking_parameter_ids,
)
from hybridize.train.optim import WarmupCosine, build_optimizer, build_scheduler

from .conftest import COMMON, make_hybrid


def test_presets_follow_method_section_7() -> None:
    small = resolve_config("has8-small")
    assert (small.optimizer, small.lr, small.weight_decay, small.batch_size) == (
        "adam",
        1e-3,
        1e-3,
        16,
    )
    assert small.paper_inputs
    big = resolve_config("has8-imagenet", batch_size=512)
    assert big.optimizer == "sgd" and big.nesterov and big.momentum == 0.9
    assert big.lr == pytest.approx(0.1 * 512 / 256) and big.weight_decay == 5e-4
    assert big.warmup_epochs == 5 and big.scheduler == "cosine"
    assert resolve_config("has8-imagenet", lr=0.3).lr == 0.3  # explicit beats preset


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "lamb"},
        {"amp": "fp8"},
        {"epochs": 0},
        {"ann_lr_scale": -1.0},
        {"bogus": 1},
        # numpy's seed range, and values that torch or the schedule would fail on later
        {"seed": -1},
        {"seed": 2**32},
        {"warmup_epochs": float("inf")},
        {"lr": float("nan")},
        {"grad_clip": float("inf")},
        {"momentum": -0.5},
        {"optimizer": "sgd", "momentum": 0.0, "nesterov": True},
    ],
)
def test_bad_options_are_one_line_errors(options: dict) -> None:
    with pytest.raises(TrainError) as exc:
        resolve_config(**options)
    assert "\n" not in str(exc.value)
    with pytest.raises(TrainError, match="has8-small"):
        resolve_config("has9")


def test_param_groups_split_ann_and_spiking() -> None:
    model = make_hybrid()
    block = model[0]
    expected = {id(p) for p in block.branch.parameters()} | {id(block.gate)}
    assert spiking_parameter_ids(model) == expected
    cfg = resolve_config(lr=0.1, ann_lr_scale=0.25, weight_decay=0.5)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert set(groups) == {"ann", "ann_no_decay", "spiking", "spiking_no_decay"}
    assert groups["ann"]["lr"] == pytest.approx(0.025) and groups["spiking"]["lr"] == 0.1
    assert any(p is block.gate for p in groups["spiking_no_decay"]["params"])
    assert groups["spiking_no_decay"]["weight_decay"] == 0 and groups["ann"]["weight_decay"] == 0.5
    total = sum(p.numel() for g in groups.values() for p in g["params"])
    assert total == sum(p.numel() for p in model.parameters())


def test_zero_ann_lr_scale_freezes_the_ann() -> None:
    model = make_hybrid()
    groups = param_groups(model, resolve_config(ann_lr_scale=0.0))
    assert {g["name"] for g in groups} == {"spiking", "spiking_no_decay"}
    assert not any(p.requires_grad for p in model[0].ann.parameters())
    assert not model[3].weight.requires_grad and model[0].gate.requires_grad


def test_a_replaced_blocks_branch_is_on_the_spiking_side() -> None:
    """A SpikingBranch that replaced its ANN block (replace mode) trains at the spiking lr and
    stays trainable when the ANN is frozen."""
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, SpikingBranch

    twin = nn.Sequential(nn.Linear(4, 4), LIF(time_steps=4))
    model = nn.Sequential(
        SpikingBranch(twin, BitPlaneEncoder(bits=4), BitPlaneDecoder(bits=4)), nn.Linear(4, 3)
    )
    assert spiking_parameter_ids(model) == {id(p) for p in model[0].parameters()}
    groups = param_groups(model, resolve_config(ann_lr_scale=0.0))
    assert {g["name"] for g in groups} == {"spiking", "spiking_no_decay"}
    assert twin[0].weight.requires_grad and not model[1].weight.requires_grad


def test_a_frozen_ann_holds_its_norms_but_not_the_twins(data) -> None:
    """ann_lr_scale=0 keeps the ANN's BatchNorm statistics; a twin's BatchNorm, with parameters
    or without (affine=False, as copied from such an ANN), keeps learning its statistics."""
    from hybridize.train.epoch import hold_ann_norms

    model = make_hybrid()
    twin = model[0].branch.twin
    twin[1] = nn.BatchNorm2d(4, affine=False)
    model.train()
    hold_ann_norms(model)
    assert not model[0].ann[1].training  # the ANN's norm: held
    assert twin[1].training  # the twin's parameter-less norm: trains
    before = twin[1].running_mean.clone()
    finetune(model, data, epochs=1, ann_lr_scale=0.0, **COMMON)
    assert not torch.equal(twin[1].running_mean, before)


def test_warmup_then_cosine_matches_formula() -> None:
    f = WarmupCosine(total_steps=12, warmup_steps=2, cosine=True)
    assert [f(0), f(1)] == [0.5, 1.0]
    for step in (2, 5, 9, 12):
        assert f(step) == pytest.approx(0.5 * (1 + math.cos(math.pi * (step - 2) / 10)))
    assert WarmupCosine(12, 0, cosine=False)(7) == 1.0


def test_scheduler_drives_every_group() -> None:
    model = make_hybrid()
    cfg = resolve_config(lr=0.2, ann_lr_scale=0.5, epochs=2, warmup_epochs=1, optimizer="sgd")
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    assert lrs[0]["spiking"] == pytest.approx(0.2 * 1 / 4)
    assert lrs[3]["ann"] == pytest.approx(0.1) and lrs[3]["spiking"] == pytest.approx(0.2)
    cos = 0.5 * (1 + math.cos(math.pi * 2 / 4))
    assert lrs[6]["ann"] == pytest.approx(0.1 * cos)
    assert isinstance(opt, torch.optim.SGD)
