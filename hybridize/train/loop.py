"""``finetune``: one config in, a run opened (new or resumed), its epochs trained and saved."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize.train.config import FinetuneConfig, option_names, resolve_config
from hybridize.train.distributed import DistEnv, broadcast_flag, setup, sync_buffers, teardown
from hybridize.train.epoch import GradientOverflow, train_epoch
from hybridize.train.errors import RunInUseError, TrainError, TrainInterrupted
from hybridize.train.evaluate import run_eval
from hybridize.train.lock import RunLock, prepare_folder
from hybridize.train.progress import ProgressCallback, epoch_summary, resolve_progress
from hybridize.train.resume import explicit_fields, stored_option
from hybridize.train.run import TrainingRun, open_run
from hybridize.train.state import resolve_model


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


def finetune(
    model_or_path: nn.Module | str | Path,
    data: str | tuple | None = None,
    config: FinetuneConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    device: str | None = None,
    data_root: str | None = None,
    progress: ProgressCallback | bool = True,
    tag: str = "finetune",
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a model (hybrid or plain) or a checkpoint path on data set ``data`` (a name,
    or a ``(train, eval)`` pair of datasets; None: ``fashion-mnist`` for a new run, the run's
    own on ``resume``).

    The options are ``config`` (default: :class:`FinetuneConfig`'s defaults) with
    ``overrides`` (its field names, e.g. ``epochs=3, lr=1e-3``; None leaves a field alone;
    ``preset`` applies a preset first). ``out`` receives ``last``/``best`` checkpoints, their
    ``.state.pt`` training states, ``metrics.jsonl`` and ``config.json``; one run at a time may
    use it (:class:`RunInUseError` otherwise). ``resume`` continues the run in ``out`` from the
    end of its last finished epoch with the run's own options (options given here, a whole
    ``config`` included, must equal them: :class:`ResumeMismatchError`). ``stop_after`` ends
    this call after that many epochs (the schedule still spans ``epochs``), for jobs run in
    slices. ``progress``: True prints a line per epoch, False only notes, or a
    :class:`ProgressCallback`. Ctrl-C raises :class:`TrainInterrupted` (a
    ``KeyboardInterrupt``) and leaves ``out`` as it was at the end of the last finished epoch.
    """
    preset = overrides.pop("preset", None)
    if resume and out is not None and preset is not None and overrides.get("batch_size") is None:
        # a preset's batch-dependent values (lr = 0.1 B / 256) follow the run's batch size
        overrides["batch_size"] = stored_option(Path(out), "batch_size")
    cfg = resolve_config(preset, base=config, **overrides)
    explicit: set[str] = set()
    if resume:
        explicit = option_names() if config is not None else explicit_fields(preset, overrides)
    out = Path(out) if out is not None else None
    if resume and out is None:
        raise TrainError("--resume needs --out DIR, the folder of the run to continue")
    if resume and out is not None and not out.is_dir():
        raise TrainError(f"--resume: run folder {out} not found; check --out or drop --resume")
    model = resolve_model(model_or_path)
    wanted = [p.requires_grad for p in model.parameters()]  # a frozen ANN is unfrozen after
    env = setup(device)
    try:
        report = resolve_progress(progress, env.is_main)
        lock = _lock_run(out, env, report)
        try:
            source = None if isinstance(model_or_path, nn.Module) else Path(model_or_path)
            run = open_run(
                model, data, cfg, env, out=out, resume=resume, explicit=explicit,
                data_root=data_root, tag=tag, source=source.resolve() if source else None,
            )  # fmt: skip
            with _terminate_as_interrupt():
                return _train(run, stop_after, report)
        finally:
            if lock is not None:
                lock.release()
    finally:
        for p, grad in zip(model.parameters(), wanted, strict=True):
            p.requires_grad_(grad)
        teardown(env)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While training, SIGTERM (a scheduler's stop, torchrun stopping the other ranks when one
    failed) ends the run as Ctrl-C does: no temporary files left, one line saying what is
    kept. Only the main thread can install a handler; elsewhere SIGTERM keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _lock_run(out: Path | None, env: DistEnv, report: ProgressCallback) -> RunLock | None:
    """Rank 0 creates and locks the run folder; every rank stops together if it cannot."""
    if out is None:
        return None
    lock, failure = None, None
    if env.is_main:
        try:
            lock = RunLock(out, created=prepare_folder(out))
            note = lock.acquire()
            if note:
                report.note(note)
        except TrainError as exc:
            failure = exc
        except OSError as exc:  # no locking on this file system (ENOLCK), no access to it
            failure = TrainError(
                f"cannot lock the run folder {out} ({exc.strerror or exc}); use a local folder "
                "you can write to for --out"
            )
    if broadcast_flag(failure is not None, env):
        raise failure or RunInUseError(f"rank 0 could not lock the run folder {out}; see its error")
    return lock


def _train(run: TrainingRun, stop_after: int | None, report: ProgressCallback) -> FinetuneResult:
    """The epochs of this call; Ctrl-C and CUDA OOM become one-line errors."""
    cfg = run.cfg
    end = cfg.epochs if stop_after is None else min(cfg.epochs, run.start_epoch + stop_after)
    paths = run.paths
    result = FinetuneResult(run.model, cfg, out=paths.out, last=paths.last, best=paths.best)
    epoch = run.start_epoch
    try:
        for epoch in range(run.start_epoch, end):
            result.history.append(_epoch(run, epoch, report))
        if end < cfg.epochs:
            result.stopped = "stop_after"
    except TrainInterrupted:
        raise
    except KeyboardInterrupt:
        # the interrupted epoch is dropped: out/last keeps the end of the last finished epoch,
        # so --resume restarts that epoch exactly
        raise TrainInterrupted(run.interrupted(epoch)) from None
    except torch.cuda.OutOfMemoryError:
        raise TrainError(
            f"{run.tag}: CUDA out of memory at batch size {cfg.batch_size}; "
            f"try --batch-size {max(1, cfg.batch_size // 2)} (or --amp bf16)"
        ) from None
    finally:
        run.writer.close()
    result.best_top1 = run.best_top1
    return result


def _epoch(run: TrainingRun, epoch: int, report: ProgressCallback) -> dict[str, Any]:
    """Train, check, evaluate and save one epoch; its metrics record."""
    try:
        record = train_epoch(run, epoch, report)
    except GradientOverflow as exc:
        raise TrainError(f"{exc}; stopped and {run.kept()}") from None
    if record is None:
        raise run.nonfinite("training loss", epoch)
    if broadcast_flag(not _all_finite(run.model), run.env):
        raise run.nonfinite("weights", epoch)
    sync_buffers(run.model, run.env)
    evaluation = run_eval(
        run.eval_net, run.loaders.eval, run.env, run.cfg.amp, probe_model=run.model,
        channels_last=run.cfg.channels_last,
    )  # fmt: skip
    record.update(evaluation)
    if not math.isfinite(record["eval_loss"]):
        raise run.nonfinite("evaluation loss", epoch)
    _save_epoch(run, epoch, record)
    report.epoch_end(record, epoch_summary(run.tag, record, run.cfg.epochs))
    return record


def _save_epoch(run: TrainingRun, epoch: int, record: dict[str, Any]) -> None:
    improved = run.best_top1 is None or record["eval_top1"] > run.best_top1
    if improved:
        run.best_top1 = record["eval_top1"]
    record["best_top1"] = run.best_top1
    run.history.append(record)
    # order: best, then last (the commit point), then the metrics line; a kill between any
    # two leaves a state that --resume completes (tests/train/test_crash_consistency.py)
    if improved:
        run.checkpoint("best", epoch + 1)
    run.checkpoint("last", epoch + 1)  # sets run.saved_epoch at its commit point
    run.writer.write(record)


def _all_finite(model: nn.Module) -> bool:
    return all(
        bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()
    )
