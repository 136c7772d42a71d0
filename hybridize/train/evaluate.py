"""Evaluation: loss, top-1/top-5, firing rate; single process or sharded over DDP ranks."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from hybridize._util import model_input_errors
from hybridize.train.config import AMP_MODES
from hybridize.train.distributed import DistEnv, all_sum, to_device
from hybridize.train.errors import TrainError
from hybridize.train.probes import FiringRates, gate_values

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str, device: torch.device) -> None:
    """A one-line :class:`TrainError` for an ``amp`` that is not one of AMP_MODES, or fp16
    without CUDA."""
    if amp not in AMP_MODES:
        raise TrainError(f"amp {amp!r}: choose {'|'.join(AMP_MODES)}")
    if amp == "fp16" and device.type != "cuda":
        raise TrainError("--amp fp16 needs a CUDA device; use --amp bf16 or off on the CPU")


def autocast(device: torch.device, amp: str):
    """The autocast context for ``amp`` ("bf16", "fp16", "off")."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AMP_DTYPES[amp])


@torch.no_grad()
def run_eval(
    model: nn.Module,
    loader: DataLoader,
    env: DistEnv,
    amp: str = "off",
    probe_model: nn.Module | None = None,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` over ``loader`` (this rank's shard), summed over ranks; images go
    channels-last with ``channels_last`` (a model converted with it)."""
    was_training = model.training
    model.eval()
    probe = FiringRates(probe_model if probe_model is not None else model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    top1 = torch.zeros((), dtype=torch.int64, device=env.device)
    top5 = torch.zeros((), dtype=torch.int64, device=env.device)
    n = 0
    t0 = time.perf_counter()
    with probe:
        for x, y in loader:
            x = to_device(x, env.device, channels_last)
            y = y.to(env.device, non_blocking=True)
            with autocast(env.device, amp), model_input_errors(tuple(x.shape), TrainError):
                logits = model(x)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            k = min(5, logits.shape[1])
            pred = logits.topk(k, dim=1).indices
            hit = pred == y[:, None]
            top1 += hit[:, 0].sum()
            top5 += hit.any(dim=1).sum()
            n += len(y)
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    elapsed = time.perf_counter() - t0
    spikes, elements = probe.totals()
    totals = all_sum([float(loss_sum), float(top1), float(top5), float(n), spikes, elements], env)
    model.train(was_training)
    count = max(totals[3], 1.0)
    return {
        "eval_loss": totals[0] / count,
        "eval_top1": totals[1] / count,
        "eval_top5": totals[2] / count,
        "eval_samples": int(totals[3]),
        "eval_images_per_s": totals[3] / elapsed if elapsed > 0 else None,
        "firing_rate": totals[4] / totals[5] if totals[5] else None,
        "gates": gate_values(probe_model if probe_model is not None else model),
    }


def evaluate(
    model_or_path: nn.Module | str | Path,
    data: str | tuple = "fashion-mnist",
    *,
    data_root: str | None = None,
    batch_size: int = 128,
    img_size: int | None = None,
    limit: int | None = None,
    paper_inputs: bool = False,
    amp: str = "off",
    device: str | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate a model (or checkpoint path) on the eval split of ``data``.

    Returns ``eval_loss``, ``eval_top1``, ``eval_top5`` (fractions), ``eval_samples``,
    ``firing_rate`` (mean over all LIF outputs; None for a plain ANN) and ``gates``.
    """
    from hybridize.data import eval_loader
    from hybridize.train.allocator import retain_freed_memory
    from hybridize.train.distributed import setup, teardown
    from hybridize.train.state import resolve_model

    model = resolve_model(model_or_path)
    env = setup(device)
    if env.device.type == "cpu":  # a hybrid's large activations would page-fault each batch
        retain_freed_memory()
    try:
        check_amp(amp, env.device)
        model.to(env.device)
        loader = eval_loader(
            data,
            model,
            limit=limit,
            batch_size=batch_size,
            img_size=img_size,
            data_root=data_root,
            paper=paper_inputs,
            workers=workers,
            seed=seed,
            world_size=env.world_size,
            rank=env.rank,
        )
        return run_eval(model, loader, env, amp=amp)
    finally:
        teardown(env)
