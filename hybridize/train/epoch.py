"""One training epoch of a run, step by step, with one host sync per step."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hybridize.train import grad_guard
from hybridize.train.distributed import all_sum, any_rank, to_device
from hybridize.train.evaluate import autocast
from hybridize.train.optim import spiking_modules
from hybridize.train.progress import ProgressCallback
from hybridize.train.run import TrainingRun


class GradientOverflow(Exception):
    """A step met a non-finite gradient (nothing stepped); the message is the block diagnosis."""


def train_epoch(run: TrainingRun, epoch: int, progress: ProgressCallback) -> dict[str, Any] | None:
    """One epoch of training; its record, or None when the loss turned non-finite (that step
    was not taken)."""
    _begin_epoch(run, epoch)
    progress.epoch_start(f"{run.tag} {epoch + 1}/{run.cfg.epochs}", run.steps)
    lr_at_start = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
    device = run.env.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(run.loaders.train):
        if i >= run.steps:
            break
        x = to_device(x, device, run.cfg.channels_last)
        y = y.to(device, non_blocking=True)
        taken = _step(run, x, y, f"{run.tag} epoch {epoch + 1} step {i + 1}")
        if taken is None:
            return None
        loss, logits, value = taken
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        progress.step(value)
    elapsed = time.perf_counter() - t0
    totals = all_sum([float(loss_sum), float(correct), float(seen)], run.env)
    n = max(totals[2], 1.0)
    return {
        "epoch": epoch + 1,
        "train_loss": totals[0] / n,
        "train_acc": totals[1] / n,
        "train_samples": int(totals[2]),
        "images_per_s": totals[2] / elapsed if elapsed > 0 else math.nan,
        "train_time_s": elapsed,
        "lr": lr_at_start,
    }


def _begin_epoch(run: TrainingRun, epoch: int) -> None:
    run.loaders.start_epoch(epoch)  # worker seeds depend on (seed, epoch, rank) only
    run.net.train()
    if run.cfg.ann_lr_scale == 0:
        hold_ann_norms(run.model)


def hold_ann_norms(model: nn.Module) -> None:
    """With a frozen ANN, keep its norm layers' running statistics fixed (eval mode); the
    twins' norms (by where they sit, with or without parameters) keep training."""
    spiking = {id(m) for m in spiking_modules(model)}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and id(m) not in spiking:
            m.eval()


def _step(
    run: TrainingRun, x: torch.Tensor, y: torch.Tensor, where: str
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """Forward, backward and (when loss and gradients are finite) an optimizer step:
    (loss, logits, loss as a float); None when the loss is not finite."""
    cfg, opt, scaler = run.cfg, run.optimizer, run.scaler
    with autocast(run.env.device, cfg.amp):
        logits = run.net(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip is not None:
        scaler.unscale_(opt)
    # fp16's scaler skips inf steps itself; otherwise stop before NaN reaches the weights.
    # The loss and the gradient check are read in one host sync, before any clipping: a
    # clip by a non-finite norm would spread NaN to every gradient and hide the block.
    guard = not scaler.is_enabled()
    checks = [loss.detach().float()]
    if guard:
        checks.append(grad_guard.grads_finite_tensor(run.model).to(loss.device).float())
    values = torch.stack(checks).tolist()
    bad_loss, bad_grads = any_rank(
        [not math.isfinite(values[0]), guard and values[1] < 0.5], run.env
    )
    if bad_loss:
        return None
    if bad_grads:
        raise GradientOverflow(grad_guard.overflow_message(run.model, where))
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    run.scheduler.step()
    return loss, logits, values[0]
