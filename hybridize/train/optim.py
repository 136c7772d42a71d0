"""Parameter groups (ANN vs spiking), optimizers and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from hybridize.spiking import FusionBlock, SpikingBranch
from hybridize.train.config import FinetuneConfig
from hybridize.train.errors import TrainError


def spiking_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of the spiking side: every SpikingBranch (a FusionBlock's or one that
    replaced its ANN block) with everything in it."""
    return [m for b in model.modules() if isinstance(b, SpikingBranch) for m in b.modules()]


def spiking_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the parameters that belong to the spiking side: those of
    :func:`spiking_modules`, and each FusionBlock's own (its gate)."""
    ids = {id(p) for m in spiking_modules(model) for p in m.parameters(recurse=False)}
    for m in model.modules():
        if isinstance(m, FusionBlock):
            ids |= {id(p) for p in m.parameters(recurse=False)}
    return ids


def param_groups(model: nn.Module, cfg: FinetuneConfig) -> list[dict]:
    """Groups ``ann``/``spiking`` x decay/no-decay; each carries ``name`` and ``lr_scale``.

    Biases, norm weights and gates (ndim <= 1) get no weight decay (decay would pull the gates
    back to 0). ``ann_lr_scale == 0`` freezes the ANN: its parameters get
    ``requires_grad=False`` and are left out of the optimizer.
    """
    spiking = spiking_parameter_ids(model)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        side = "spiking" if id(p) in spiking else "ann"
        if side == "ann" and cfg.ann_lr_scale == 0:
            p.requires_grad_(False)
            continue
        if not p.requires_grad:
            continue
        buckets.setdefault((side, p.ndim > 1), []).append(p)
    groups = []
    for (side, decay), params in sorted(buckets.items()):
        scale = cfg.ann_lr_scale if side == "ann" else 1.0
        groups.append(
            {
                "params": params,
                "name": f"{side}{'' if decay else '_no_decay'}",
                "lr": cfg.lr * scale,
                "lr_scale": scale,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.optimizer`` over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if not groups:
        raise TrainError("nothing to train: every parameter is frozen; raise --ann-lr-scale")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        # Adam's weight decay is L2 in the gradient (as the released code uses it)
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class WarmupCosine:
    """lr factor per optimizer step: linear warm-up from ~0 to 1, then cosine to 0 (or flat)."""

    def __init__(self, total_steps: int, warmup_steps: int, cosine: bool) -> None:
        self.total, self.warmup, self.cosine = max(1, total_steps), warmup_steps, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if not self.cosine:
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: FinetuneConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR; ``scheduler="none"`` keeps the lr flat after any warm-up."""
    schedule = WarmupCosine(
        total_steps=cfg.epochs * steps_per_epoch,
        warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
        cosine=cfg.scheduler == "cosine",
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
