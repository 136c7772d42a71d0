"""Fine-tuning options, the paper's presets, and their resolution (explicit > preset > default)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hybridize.train.errors import TrainError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "none")
AMP_MODES = ("bf16", "fp16", "off")


@dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of a run; ``None`` fields are filled from the preset, then the defaults."""

    epochs: int = 1
    batch_size: int = 64  # global batch: split across DDP processes
    lr: float = 1e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    ann_lr_scale: float = 1.0
    paper_inputs: bool = False  # inputs in [0, 1], no mean/std, flip-only augmentation
    augment: bool = True
    img_size: int | None = None
    amp: str = "off"
    compile: bool = False
    # 4-D weights and images channels-last (NHWC): faster convolutions on CPU and tensor cores
    channels_last: bool = False
    limit_train_batches: int | None = None
    limit_train: int | None = None  # samples kept per split (deterministic subset)
    limit_eval: int | None = None
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    workers: int | None = None
    sync_bn: bool = False
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _has8_imagenet(batch_size: int) -> dict[str, Any]:
    return dict(
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        lr=0.1 * batch_size / 256,
        warmup_epochs=5.0,
        scheduler="cosine",
        paper_inputs=True,
    )


PRESETS: dict[str, Any] = {
    # METHOD.md section 7, small data sets: Adam 1e-3, wd 1e-3, batch 16, [0, 1] inputs, flip
    "has8-small": lambda b: dict(
        optimizer="adam",
        lr=1e-3,
        weight_decay=1e-3,
        batch_size=16,
        scheduler="none",
        warmup_epochs=0.0,
        paper_inputs=True,
    ),
    # METHOD.md section 7, ImageNet: SGD Nesterov 0.9, wd 5e-4, lr 0.1*B/256, 5 warm-up, cosine
    "has8-imagenet": _has8_imagenet,
}


def option_names() -> set[str]:
    """The fields of :class:`FinetuneConfig`: the options a run takes."""
    return {f.name for f in fields(FinetuneConfig)}


def check_option_names(names: Iterable[str]) -> None:
    """One-line :class:`TrainError` for the first name that is not a config field."""
    known = option_names()
    for name in sorted(set(names) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(sorted(known))}"
        raise TrainError(f"unknown fine-tuning option {name!r}: {hint}")


def resolve_config(
    preset: str | None = None, *, base: FinetuneConfig | None = None, **options: Any
) -> FinetuneConfig:
    """Build a config: ``base`` (default: the defaults), overridden by ``preset``, overridden
    by the non-None ``options`` (names of :class:`FinetuneConfig` fields)."""
    check_option_names(options)
    given = {k: v for k, v in options.items() if v is not None}
    cfg = base if base is not None else FinetuneConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise TrainError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        batch = given.get("batch_size", 16 if preset == "has8-small" else cfg.batch_size)
        cfg = replace(cfg, **PRESETS[preset](batch), preset=preset)
    cfg = replace(cfg, **given)
    validate(cfg)
    return cfg


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    """None (not limited / the default) or an integer of 1 or more."""
    return value is None or (isinstance(value, int) and _is_int(value) and value >= 1)


def validate(cfg: FinetuneConfig) -> None:
    """Raise :class:`TrainError` for options out of range."""
    checks = [
        (
            cfg.optimizer in OPTIMIZERS,
            f"optimizer {cfg.optimizer!r}: choose {'|'.join(OPTIMIZERS)}",
        ),
        (
            cfg.scheduler in SCHEDULERS,
            f"scheduler {cfg.scheduler!r}: choose {'|'.join(SCHEDULERS)}",
        ),
        (cfg.amp in AMP_MODES, f"amp {cfg.amp!r}: choose {'|'.join(AMP_MODES)}"),
        (cfg.epochs >= 1, f"epochs {cfg.epochs}: give 1 or more"),
        (cfg.batch_size >= 1, f"batch size {cfg.batch_size}: give 1 or more"),
        (
            _is_int(cfg.seed) and 0 <= cfg.seed < 2**32,
            f"seed {cfg.seed}: give an integer from 0 to {2**32 - 1}",
        ),
        (0 < cfg.lr < math.inf, f"lr {cfg.lr}: give a positive, finite learning rate"),
        (
            0 <= cfg.ann_lr_scale < math.inf,
            f"ann-lr-scale {cfg.ann_lr_scale}: give 0 (freeze) or a finite value",
        ),
        (
            0 <= cfg.warmup_epochs < math.inf,
            f"warmup-epochs {cfg.warmup_epochs}: give 0 or a finite number",
        ),
        (
            0 <= cfg.weight_decay < math.inf,
            f"weight decay {cfg.weight_decay}: give 0 or a finite value",
        ),
        (
            0 <= cfg.momentum < math.inf,
            f"momentum {cfg.momentum}: give 0 or a finite value",
        ),
        (
            not (cfg.nesterov and cfg.momentum == 0),
            "nesterov needs a momentum above 0",
        ),
        (
            cfg.limit_train_batches is None or cfg.limit_train_batches >= 1,
            f"limit-train-batches {cfg.limit_train_batches}: give 1 or more",
        ),
        (_positive(cfg.limit_train), f"limit-train {cfg.limit_train}: give 1 or more"),
        (_positive(cfg.limit_eval), f"limit-eval {cfg.limit_eval}: give 1 or more"),
        (_positive(cfg.img_size), f"img-size {cfg.img_size}: give a size of 1 px or more"),
        (
            cfg.workers is None or (_is_int(cfg.workers) and cfg.workers >= 0),
            f"workers {cfg.workers}: give 0 (load in the main process) or more",
        ),
        (
            cfg.grad_clip is None or 0 < cfg.grad_clip < math.inf,
            f"grad-clip {cfg.grad_clip}: give a positive, finite norm, or leave it out",
        ),
        (
            0 <= cfg.label_smoothing < 1,
            f"label smoothing {cfg.label_smoothing}: give a value in [0, 1)",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainError(f"invalid fine-tuning option: {message}")
