"""The fine-tuning loop: single process or DDP under torchrun, checkpoints, resume."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from hybridize._atomic import atomic_path
from hybridize.train import grad_guard
from hybridize.train.config import FinetuneConfig, resolve_config
from hybridize.train.distributed import DistEnv, all_sum, broadcast_flag, setup, teardown
from hybridize.train.errors import (
    ResumeMismatchError,
    RunInUseError,
    TrainError,
    TrainInterrupted,
)
from hybridize.train.evaluate import autocast, run_eval
from hybridize.train.lock import RunLock, prepare_folder
from hybridize.train.optim import build_optimizer, build_scheduler, spiking_parameter_ids
from hybridize.train.report import MetricsWriter, make_progress
from hybridize.train.resume import (
    explicit_fields,
    optimizer_mismatch,
    previous_records,
    restore_weights,
    resumed_config,
)
from hybridize.train.state import (
    load_state,
    load_weights,
    rng_state,
    save_model,
    save_state,
    set_rng_state,
    state_path,
)


@dataclass
class FinetuneResult:
    """What a run produced. ``stopped`` is None or "stop_after" (Ctrl-C raises
    :class:`TrainInterrupted` instead of returning)."""

    model: nn.Module
    config: FinetuneConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float | None = None
    out: Path | None = None
    last: Path | None = None
    best: Path | None = None
    stopped: str | None = None


def resolve_model(model_or_path: nn.Module | str | Path) -> nn.Module:
    """A module as given, or the checkpoint at a path loaded with ``hybridize.load``."""
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    from hybridize.train.state import load_model

    return load_model(model_or_path)


def _hold_ann_norms(model: nn.Module) -> None:
    """With a frozen ANN, keep its norm layers' running statistics fixed (eval mode)."""
    spiking = spiking_parameter_ids(model)
    for m in model.modules():
        is_norm = isinstance(m, nn.modules.batchnorm._NormBase)
        if is_norm and not any(id(p) in spiking for p in m.parameters(recurse=False)):
            m.eval()


def _paths(out: Path | None) -> dict[str, Path | None]:
    if out is None:
        return {"last": None, "best": None}
    return {"last": out / "last.safetensors", "best": out / "best.safetensors"}


def finetune(
    model_or_path: nn.Module | str | Path,
    data: str | tuple = "fashion-mnist",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    scheduler: str | None = None,
    warmup_epochs: float | None = None,
    weight_decay: float | None = None,
    ann_lr_scale: float | None = None,
    preset: str | None = None,
    amp: str | None = None,
    compile: bool | None = None,
    limit_train_batches: int | None = None,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    img_size: int | None = None,
    augment: bool | None = None,
    paper_inputs: bool | None = None,
    label_smoothing: float | None = None,
    grad_clip: float | None = None,
    seed: int | None = None,
    workers: int | None = None,
    sync_bn: bool | None = None,
    data_root: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    progress: bool = True,
    console: Console | None = None,
    tag: str = "finetune",
) -> FinetuneResult:
    """Fine-tune a model (hybrid or plain) or a checkpoint path on data set ``data``.

    ``batch_size`` is the global batch (split over DDP processes). ``out`` receives
    ``last``/``best`` checkpoints, their ``.state.pt`` training states, ``metrics.jsonl`` and
    ``config.json``; one run at a time may use it (:class:`RunInUseError` otherwise).
    ``resume`` continues the run in ``out`` from the end of its last finished epoch, with the
    run's own options (options given here must equal them: :class:`ResumeMismatchError`).
    ``stop_after`` ends this call after that many epochs (the schedule still spans ``epochs``),
    for jobs run in slices. Ctrl-C raises :class:`TrainInterrupted` (a ``KeyboardInterrupt``)
    and leaves ``out`` as it was at the end of the last finished epoch.
    """
    options: dict[str, Any] = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        scheduler=scheduler,
        warmup_epochs=warmup_epochs,
        weight_decay=weight_decay,
        ann_lr_scale=ann_lr_scale,
        amp=amp,
        compile=compile,
        limit_train_batches=limit_train_batches,
        limit_train=limit_train,
        limit_eval=limit_eval,
        img_size=img_size,
        augment=augment,
        paper_inputs=paper_inputs,
        label_smoothing=label_smoothing,
        grad_clip=grad_clip,
        seed=seed,
        workers=workers,
        sync_bn=sync_bn,
    )
    cfg = resolve_config(preset, **options)
    explicit = explicit_fields(preset, options) if resume else set()
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise TrainError("--resume needs --out DIR, the folder of the run to continue")
    if resume and not out.is_dir():
        raise TrainError(f"--resume: run folder {out} not found; check --out or drop --resume")
    model = resolve_model(model_or_path)
    env = setup(device)
    try:
        lock = _lock_run(out, env, console)
        try:
            return _run(
                model,
                data,
                cfg,
                explicit,
                env,
                out,
                resume,
                stop_after,
                data_root,
                progress,
                console,
                tag,
            )
        finally:
            if lock is not None:
                lock.release()
    finally:
        teardown(env)


def _note(console: Console | None, text: str) -> None:
    (console or Console(stderr=True)).print(text, highlight=False, soft_wrap=True)


def _lock_run(out: Path | None, env: DistEnv, console: Console | None) -> RunLock | None:
    """Rank 0 creates and locks the run folder; every rank stops together if it cannot."""
    if out is None:
        return None
    lock, failure = None, None
    if env.is_main:
        try:
            lock = RunLock(out, created=prepare_folder(out))
            note = lock.acquire()
            if note:
                _note(console, note)
        except TrainError as exc:
            failure = exc
    if broadcast_flag(failure is not None, env):
        raise failure or RunInUseError(f"rank 0 could not lock the run folder {out}; see its error")
    return lock


def _all_finite(model: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )


def _run(
    base: nn.Module,
    data: str | tuple,
    cfg: FinetuneConfig,
    explicit: set[str],
    env: DistEnv,
    out: Path | None,
    resume: bool,
    stop_after: int | None,
    data_root: str | None,
    show: bool,
    console: Console | None,
    tag: str,
) -> FinetuneResult:
    from hybridize.data import build_loaders

    paths = _paths(out)
    state: dict[str, Any] | None = None
    if resume:
        assert out is not None and paths["last"] is not None
        state = load_state(state_path(paths["last"]))
        cfg = resumed_config(state.get("config") or {}, cfg, explicit, out, data)
    if cfg.batch_size % env.world_size:
        raise TrainError(
            f"batch size {cfg.batch_size} does not split over {env.world_size} processes; "
            f"give a multiple of {env.world_size}"
        )
    if cfg.amp == "fp16" and env.device.type != "cuda":
        raise TrainError("--amp fp16 needs a CUDA device; use --amp bf16 or off on the CPU")
    torch.manual_seed(cfg.seed + env.rank)
    import random

    import numpy as np

    random.seed(cfg.seed + env.rank)
    np.random.seed(cfg.seed + env.rank)

    loaders = build_loaders(
        data,
        base,
        batch_size=cfg.batch_size // env.world_size,
        img_size=cfg.img_size,
        data_root=data_root,
        limit_train=cfg.limit_train,
        limit_eval=cfg.limit_eval,
        augment=cfg.augment,
        paper=cfg.paper_inputs,
        workers=cfg.workers,
        seed=cfg.seed,
        world_size=env.world_size,
        rank=env.rank,
    )
    steps = len(loaders.train)
    if cfg.limit_train_batches is not None:
        steps = min(steps, cfg.limit_train_batches)

    base.to(env.device)
    if state is not None:
        assert out is not None and paths["last"] is not None
        if "model" in state:
            restore_weights(base, state["model"], out)
        else:  # a state written before the weights were kept in it
            try:
                load_weights(base, paths["last"])
            except RuntimeError:
                raise ResumeMismatchError(
                    f"--resume: {paths['last']} holds another model; resume with the "
                    "checkpoint the run started from, or choose another --out"
                ) from None
    if cfg.sync_bn and env.distributed:
        if env.device.type != "cuda":
            raise TrainError("--sync-bn needs CUDA devices (SyncBatchNorm); drop it on the CPU")
        base = nn.SyncBatchNorm.convert_sync_batchnorm(base)
    opt = build_optimizer(base, cfg)
    sched = build_scheduler(opt, cfg, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    net: nn.Module = base
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        net = DistributedDataParallel(base, device_ids=ids)
    if cfg.compile:
        net = torch.compile(net)

    writer = MetricsWriter(out, active=env.is_main)
    result = FinetuneResult(base, cfg, out=out, last=paths["last"], best=paths["best"])
    start_epoch, best = 0, None
    history: list[dict[str, Any]] = []  # every finished epoch of the run, resumed ones too
    saved_epoch: int | None = None  # the epoch that out/last holds (None: nothing written)
    if state is not None:
        assert out is not None and paths["last"] is not None
        try:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise optimizer_mismatch(out, exc) from None
        start_epoch, best = int(state["epoch"]), state["best"]
        saved_epoch = start_epoch
        history = previous_records(out, state, start_epoch)
        if env.is_main:
            # the state is the commit record of an epoch: a kill may have come before its
            # weights file or its metrics line were written, so both follow the state here
            save_model(base, paths["last"])
            writer.rewrite(history)
        if env.is_main:
            set_rng_state(state["rng"])
        else:  # only rank 0's RNG is stored; other ranks reseed per epoch
            torch.manual_seed(cfg.seed + env.rank + 7919 * start_epoch)
    elif env.is_main and out is not None:
        writer.rewrite([])  # a new run: no lines of an earlier run in this folder
        _write_json(out / "config.json", {"tag": tag, **cfg.to_dict()})
    result.best_top1 = best
    frozen = cfg.ann_lr_scale == 0

    def checkpoint(which: str, epoch: int) -> None:
        if not env.is_main or paths[which] is None:
            return
        # the state (weights included) first: it alone decides what a resume continues from
        save_state(
            state_path(paths[which]),
            {
                "model": {k: v.detach().cpu() for k, v in base.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "best": result.best_top1,
                "history": history,
                "data": data if isinstance(data, str) else None,
                "config": cfg.to_dict(),
            },
        )
        save_model(base, paths[which])

    def kept() -> str:
        if out is None:
            return "nothing was saved (no --out)"
        if saved_epoch is None:
            return "no checkpoint was written"
        return f"kept the last good checkpoint {paths['last']} (epoch {saved_epoch})"

    def stop(what: str, epoch: int) -> TrainError:
        return TrainError(
            f"{tag}: non-finite {what} in epoch {epoch + 1}; stopped and {kept()}; "
            "lower --lr, add --grad-clip, or use --amp bf16/off"
        )

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    bar = make_progress(console, enabled=show and env.is_main)
    epoch = start_epoch
    try:
        with bar:
            for epoch in range(start_epoch, end_epoch):
                try:
                    record = _train_epoch(
                        net, base, loaders, opt, sched, scaler, cfg, env, epoch, steps, frozen,
                        bar, tag,
                    )  # fmt: skip
                except _GradientOverflow as exc:
                    raise TrainError(f"{exc}; stopped and {kept()}") from None
                if record is None:
                    raise stop("training loss", epoch)
                if broadcast_flag(not _all_finite(base), env):
                    raise stop("weights", epoch)
                record.update(run_eval(net, loaders.eval, env, cfg.amp, probe_model=base))
                if not math.isfinite(record["eval_loss"]):
                    raise stop("evaluation loss", epoch)
                improved = result.best_top1 is None or record["eval_top1"] > result.best_top1
                if improved:
                    result.best_top1 = record["eval_top1"]
                record["best_top1"] = result.best_top1
                history.append(record)
                result.history.append(record)
                # order: best, then last (the commit point), then the metrics line; a kill
                # between any two leaves a state that --resume completes (tests prove it)
                if improved:
                    checkpoint("best", epoch + 1)
                checkpoint("last", epoch + 1)
                saved_epoch = epoch + 1
                writer.write(record)
                if env.is_main and show:
                    bar.console.print(_summary(tag, record, cfg.epochs), highlight=False)
        if end_epoch < cfg.epochs:
            result.stopped = "stop_after"
    except TrainInterrupted:
        raise
    except KeyboardInterrupt:
        # the interrupted epoch is dropped: out/last keeps the end of the last finished epoch,
        # so --resume restarts that epoch exactly
        raise TrainInterrupted(_interrupted(tag, epoch, out, paths["last"], saved_epoch)) from None
    except torch.cuda.OutOfMemoryError:
        raise TrainError(
            f"{tag}: CUDA out of memory at batch size {cfg.batch_size}; "
            f"try --batch-size {max(1, cfg.batch_size // 2)} (or --amp bf16)"
        ) from None
    finally:
        writer.close()
    return result


def _interrupted(
    tag: str, epoch: int, out: Path | None, last: Path | None, saved_epoch: int | None
) -> str:
    where = f"{tag}: interrupted in epoch {epoch + 1}"
    if out is None:
        return f"{where}; nothing was saved (no --out)"
    if saved_epoch is None:
        return f"{where} before the first checkpoint; nothing to resume, start the run again"
    return (
        f"{where}; {last} holds epoch {saved_epoch}: continue with --resume --out {out} "
        "(the interrupted epoch starts again)"
    )


class _GradientOverflow(Exception):
    """A step met a non-finite gradient (nothing stepped); the message is the block diagnosis."""


def _train_epoch(
    net: nn.Module,
    base: nn.Module,
    loaders,
    opt: torch.optim.Optimizer,
    sched,
    scaler,
    cfg: FinetuneConfig,
    env: DistEnv,
    epoch: int,
    steps: int,
    frozen: bool,
    bar,
    tag: str,
) -> dict[str, Any] | None:
    """One epoch of training; None when the loss turned non-finite (nothing was stepped)."""
    loaders.sampler.set_epoch(epoch)
    if loaders.train.generator is not None:  # worker seeds depend on (seed, epoch) only
        loaders.train.generator.manual_seed(cfg.seed * 1_000_003 + epoch)
    net.train()
    if frozen:
        _hold_ann_norms(base)
    task = bar.add_task(f"{tag} {epoch + 1}/{cfg.epochs}", total=steps, info="")
    lr_at_start = {g["name"]: g["lr"] for g in opt.param_groups}
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    correct = torch.zeros((), dtype=torch.int64, device=env.device)
    seen = 0
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loaders.train):
        if i >= steps:
            break
        x = x.to(env.device, non_blocking=True)
        y = y.to(env.device, non_blocking=True)
        with autocast(env.device, cfg.amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        if broadcast_flag(not bool(torch.isfinite(loss)), env):
            bar.remove_task(task)
            return None
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(base.parameters(), cfg.grad_clip)
        # fp16's scaler skips inf steps itself; otherwise stop before NaN reaches the weights
        if not scaler.is_enabled() and broadcast_flag(not grad_guard.grads_finite(base), env):
            raise _GradientOverflow(
                grad_guard.overflow_message(base, f"{tag} epoch {epoch + 1} step {i + 1}")
            )
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.update(task, advance=1, info=f"loss {float(loss.detach()):.3f}")
    elapsed = time.perf_counter() - t0
    totals = all_sum([float(loss_sum), float(correct), float(seen)], env)
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


def _summary(tag: str, r: dict[str, Any], epochs: int) -> str:
    rate = "" if r.get("firing_rate") is None else f" rate {r['firing_rate']:.3f}"
    gates = r.get("gates") or {}
    gate = "" if not gates else f" gate {sum(gates.values()) / len(gates):+.3f}"
    return (
        f"{tag} epoch {r['epoch']}/{epochs}: train loss {r['train_loss']:.4f} "
        f"acc {100 * r['train_acc']:.2f}% | eval loss {r['eval_loss']:.4f} "
        f"top1 {100 * r['eval_top1']:.2f}% top5 {100 * r['eval_top5']:.2f}%{rate}{gate} | "
        f"{r['images_per_s']:.1f} img/s"
    )


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
