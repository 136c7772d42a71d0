"""A fine-tuning run: what it trains, with what, where it writes; new or resumed from its folder."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridize.train.allocator import retain_freed_memory
from hybridize.train.config import FinetuneConfig
from hybridize.train.distributed import DistEnv, broadcast_flag
from hybridize.train.errors import TrainError
from hybridize.train.evaluate import check_amp
from hybridize.train.optim import build_optimizer, build_scheduler
from hybridize.train.report import MetricsWriter, write_json
from hybridize.train.resume import (
    check_recipe,
    model_recipe,
    optimizer_mismatch,
    previous_records,
    restore_weights,
    resumed_config,
)
from hybridize.train.state import (
    load_state,
    read_weights,
    rng_state,
    save_model,
    save_state,
    set_rng_state,
    state_path,
)

# the data set of a new run that names none
DEFAULT_DATA = "fashion-mnist"


@dataclass(frozen=True)
class RunPaths:
    """The run folder and its two checkpoints (all None without a folder)."""

    out: Path | None

    @property
    def last(self) -> Path | None:
        return None if self.out is None else self.out / "last.safetensors"

    @property
    def best(self) -> Path | None:
        return None if self.out is None else self.out / "best.safetensors"


@dataclass
class TrainingRun:
    """Everything one run holds: ``model`` is the module that is saved, ``net`` the one that
    is called (``model`` wrapped for DDP and/or compiled)."""

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    loaders: Any
    steps: int  # training steps per epoch
    cfg: FinetuneConfig
    env: DistEnv
    paths: RunPaths
    data: Any
    tag: str
    writer: MetricsWriter
    history: list[dict[str, Any]] = field(default_factory=list)  # every finished epoch
    best_top1: float | None = None
    start_epoch: int = 0
    saved_epoch: int | None = None  # the epoch that out/last holds (None: nothing written)

    @property
    def eval_net(self) -> nn.Module:
        """The module evaluation calls: ``net``, except under several processes, where it is
        ``model`` itself. DDP broadcasts buffers in every forward, and the eval shards may
        differ in batch count (or be empty), which would leave the ranks' collectives
        mismatched: a hang."""
        return self.model if self.env.distributed else self.net

    def checkpoint(self, which: str, epoch: int) -> None:
        """Write ``best`` or ``last``: the state (weights included) first, since it alone
        decides what a resume continues from, then the weights file."""
        path: Path | None = getattr(self.paths, which)
        if not self.env.is_main or path is None:
            if which == "last":
                self.saved_epoch = epoch
            return
        save_state(
            state_path(path),
            {
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "best": self.best_top1,
                "history": self.history,
                "data": self.data if isinstance(self.data, str) else None,
                "config": self.cfg.to_dict(),
                "recipe": model_recipe(self.model),
            },
        )
        if which == "last":  # the commit point: from here a resume continues after `epoch`
            self.saved_epoch = epoch
        save_model(self.model, path)

    def kept(self) -> str:
        """What is on disk after a failure, for the one-line error."""
        if self.paths.out is None:
            return "nothing was saved (no --out)"
        if self.saved_epoch is None:
            return "no checkpoint was written"
        return f"kept the last good checkpoint {self.paths.last} (epoch {self.saved_epoch})"

    def nonfinite(self, what: str, epoch: int) -> TrainError:
        return TrainError(
            f"{self.tag}: non-finite {what} in epoch {epoch + 1}; stopped and {self.kept()}; "
            "lower --lr, add --grad-clip, or use --amp bf16/off"
        )

    def interrupted(self, epoch: int) -> str:
        where = f"{self.tag}: interrupted in epoch {epoch + 1}"
        out = self.paths.out
        if out is None:
            return f"{where}; nothing was saved (no --out)"
        if self.saved_epoch is None:
            return f"{where} before the first checkpoint; nothing to resume, start the run again"
        if self.saved_epoch == epoch + 1:  # while its checkpoint was written, after the commit
            return (
                f"{self.tag}: interrupted while saving epoch {epoch + 1}, which is kept: "
                f"continue with --resume --out {out} (which also completes {self.paths.last})"
            )
        return (
            f"{where}; {self.paths.last} holds epoch {self.saved_epoch}: continue with --resume "
            f"--out {out} (the interrupted epoch starts again)"
        )


def open_run(
    model: nn.Module,
    data: Any,
    cfg: FinetuneConfig,
    env: DistEnv,
    *,
    out: Path | None = None,
    resume: bool = False,
    explicit: set[str] | None = None,
    data_root: str | None = None,
    tag: str = "finetune",
    source: Path | None = None,
) -> TrainingRun:
    """Build a run: a new one (``out`` emptied of an earlier run's checkpoints and metrics),
    or the run in ``out`` continued from its last finished epoch (``resume``). ``source``: the
    checkpoint file the model was read from, if any (a new run never deletes it)."""
    paths = RunPaths(out)
    state: dict[str, Any] | None = None
    if resume:
        assert out is not None and paths.last is not None
        state = load_state(state_path(paths.last))
        stored = {**(state.get("config") or {}), "data": state.get("data")}  # data: beside it
        cfg = resumed_config(stored, cfg, explicit or set(), out, data)
        data = data if data is not None else _stored_data(state, out)
    elif data is None:
        data = DEFAULT_DATA
    _check_fit(cfg, env)
    if env.device.type == "cpu":  # a hybrid's large activations would page-fault each step
        retain_freed_memory()
    model.to(env.device)
    if cfg.channels_last:  # the images follow in the loops (memory_format_of)
        model.to(memory_format=torch.channels_last)
    if state is not None:  # before the data: another model's run fails fast
        assert out is not None
        check_recipe(state.get("recipe"), model_recipe(model), out)
        _restore_model(model, state, paths)
    _seed(cfg.seed + env.rank)
    loaders = _build_loaders(data, model, cfg, env, data_root)
    steps = len(loaders.train)
    if cfg.limit_train_batches is not None:
        steps = min(steps, cfg.limit_train_batches)
    if cfg.sync_bn and env.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, cfg)
    run = TrainingRun(
        model=model,
        net=_wrap(model, cfg, env),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps),
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16"),
        loaders=loaders,
        steps=steps,
        cfg=cfg,
        env=env,
        paths=paths,
        data=data,
        tag=tag,
        writer=MetricsWriter(out, active=env.is_main),
    )
    if state is not None:
        _continue(run, state)
    elif env.is_main and out is not None:
        _clear_earlier_run(paths, keep=source)
        run.writer.rewrite([])
    if env.is_main and out is not None:  # a resumed run's config.json is the run's own config
        write_json(out / "config.json", {"tag": tag, **run.cfg.to_dict()})
    return run


def _clear_earlier_run(paths: RunPaths, keep: Path | None = None) -> None:
    """A new run in a folder replaces the run that was there: its checkpoints and training
    states go before anything is written, so that a resume can never continue the earlier
    run's state under this run's config (metrics.jsonl is emptied by the caller). ``keep``:
    the checkpoint this run starts from, when it is one of them (never deleted)."""
    for path in (paths.last, paths.best):
        assert path is not None
        for stale in (state_path(path), path):  # the state first: it is the commit record
            if keep is None or not (stale.exists() and stale.resolve() == keep):
                stale.unlink(missing_ok=True)


def _stored_data(state: dict[str, Any], out: Path) -> str:
    """The data set name a resumed run trained on."""
    name = state.get("data")
    if not isinstance(name, str):
        raise TrainError(
            f"--resume: the run in {out} trained on data sets given in memory, which its state "
            "does not record; pass the same (train, eval) pair as data"
        )
    return name


def _check_fit(cfg: FinetuneConfig, env: DistEnv) -> None:
    """Options that the processes and devices of this launch cannot honour."""
    if cfg.batch_size % env.world_size:
        raise TrainError(
            f"batch size {cfg.batch_size} does not split over {env.world_size} processes; "
            f"give a multiple of {env.world_size}"
        )
    check_amp(cfg.amp, env.device)
    if cfg.sync_bn and env.distributed and env.device.type != "cuda":
        raise TrainError("--sync-bn needs CUDA devices (SyncBatchNorm); drop it on the CPU")


def _seed(seed: int) -> None:
    seed %= 2**32  # seed + rank may pass numpy's range
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _build_loaders(data: Any, model: nn.Module, cfg: FinetuneConfig, env: DistEnv, root):
    """The run's loaders. A named data set under several processes is opened by rank 0 first
    (it may download it into the shared cache) and then by the others; if rank 0 fails, every
    rank stops (one download, never several writing and cleaning up the same folder)."""
    if not (env.distributed and isinstance(data, str)):
        return _open_loaders(data, model, cfg, env, root)
    loaders, failure = None, None
    if env.is_main:
        try:
            loaders = _open_loaders(data, model, cfg, env, root)
        except Exception as exc:  # every rank learns of it before any raises
            failure = exc
    if broadcast_flag(failure is not None, env):
        raise failure or TrainError(f"rank 0 could not open the data set {data!r}; see its error")
    return loaders if loaders is not None else _open_loaders(data, model, cfg, env, root)


def _open_loaders(data: Any, model: nn.Module, cfg: FinetuneConfig, env: DistEnv, root):
    from hybridize.data import build_loaders

    return build_loaders(
        data,
        model,
        batch_size=cfg.batch_size // env.world_size,
        img_size=cfg.img_size,
        data_root=root,
        limit_train=cfg.limit_train,
        limit_eval=cfg.limit_eval,
        augment=cfg.augment,
        paper=cfg.paper_inputs,
        workers=cfg.workers,
        seed=cfg.seed,
        world_size=env.world_size,
        rank=env.rank,
    )


def _restore_model(model: nn.Module, state: dict[str, Any], paths: RunPaths) -> None:
    assert paths.out is not None and paths.last is not None
    if "model" in state:
        restore_weights(model, state["model"], paths.out)
        return
    # a state written before the weights were kept in it: the weights of the last checkpoint
    restore_weights(model, read_weights(paths.last), paths.out)


def _wrap(model: nn.Module, cfg: FinetuneConfig, env: DistEnv) -> nn.Module:
    net = model
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        return torch.compile(net)  # type: ignore[return-value]  # a callable module wrapper
    return net


def _continue(run: TrainingRun, state: dict[str, Any]) -> None:
    """Load the optimizer, scheduler, scaler, counters and RNG of a resumed run."""
    out = run.paths.out
    assert out is not None and run.paths.last is not None
    try:
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise optimizer_mismatch(out, exc) from None
    run.start_epoch, run.best_top1 = int(state["epoch"]), state["best"]
    run.saved_epoch = run.start_epoch
    run.history = previous_records(out, state, run.start_epoch)
    if run.env.is_main:
        # the state is the commit record of an epoch: a kill may have come before its
        # weights file or its metrics line were written, so both follow the state here
        save_model(run.model, run.paths.last)
        run.writer.rewrite(run.history)
        set_rng_state(state["rng"])
    else:  # only rank 0's RNG is stored; other ranks reseed per epoch
        torch.manual_seed(run.cfg.seed + run.env.rank + 7919 * run.start_epoch)
