"""What ``--resume`` may continue: the same model, data set and options as the run in ``--out``.

Options not given to the resuming call are taken from the run (its stored config); options
given explicitly must equal the run's, or the resume stops with one line listing the
differences (a changed ``epochs`` or ``lr`` would silently reshape the schedule).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._util import first_line, load_exactly
from hybridize.errors import CheckpointError
from hybridize.train.config import PRESETS, FinetuneConfig
from hybridize.train.errors import ResumeMismatchError
from hybridize.train.report import read_metrics
from hybridize.train.state import load_state, state_path


def explicit_fields(preset: str | None, options: dict[str, Any]) -> set[str]:
    """The config fields a call set itself: its non-None options and what its preset sets."""
    given = {k for k, v in options.items() if v is not None}
    if preset is not None and preset in PRESETS:
        given |= set(PRESETS[preset](options.get("batch_size") or 64)) | {"preset"}
    return given


def stored_option(out: Path, name: str) -> Any:
    """The value of option ``name`` in the run in ``out`` (None when unreadable or absent; the
    resume itself reports why). Only the config is read: the tensors are mapped, not loaded."""
    try:
        state = load_state(state_path(out / "last.safetensors"), mmap=True)
    except CheckpointError:
        return None
    config = state.get("config")
    return config.get(name) if isinstance(config, dict) else None


def resumed_config(
    stored: dict[str, Any],
    requested: FinetuneConfig,
    explicit: set[str],
    out: Path,
    data: Any = None,
) -> FinetuneConfig:
    """The run's own config; :class:`ResumeMismatchError` when an explicit option differs."""
    known = {f.name for f in fields(FinetuneConfig)}
    run = FinetuneConfig(**{k: v for k, v in stored.items() if k in known})
    diffs = [
        f"{k} {getattr(run, k)!r} -> {getattr(requested, k)!r}"
        for k in sorted(explicit & known)
        if getattr(run, k) != getattr(requested, k)
    ]
    run_data = stored.get("data")
    if isinstance(data, str) and isinstance(run_data, str) and data != run_data:
        diffs.insert(0, f"data {run_data!r} -> {data!r}")
    if diffs:
        raise ResumeMismatchError(
            f"--resume: the run in {out} was started with other options ({'; '.join(diffs)}); "
            "drop them to continue the run as it was, or start a new run with another --out"
        )
    return run


def model_recipe(model: nn.Module) -> dict[str, Any] | None:
    """The recipe a hybrid was converted with (from its ``hybridize_meta``); None otherwise."""
    meta = getattr(model, "hybridize_meta", None)
    recipe = meta.get("recipe") if isinstance(meta, dict) else None
    return recipe if isinstance(recipe, dict) else None


def _settings(recipe: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe's settings as dotted paths -> values (its free-text description left out)."""
    flat: dict[str, Any] = {}
    for key, value in recipe.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _settings(value, path + ".")
        elif path != "description":
            flat[path] = value
    return flat


def check_recipe(stored: Any, current: dict[str, Any] | None, out: Path) -> None:
    """:class:`ResumeMismatchError` when the run in ``out`` trained a hybrid of another recipe
    (encoder bits, surrogate, gain ... leave the tensors' names and shapes alike). States
    written before the recipe was stored, and plain models, are not checked."""
    if not isinstance(stored, dict) or current is None:
        return
    before, now = _settings(stored), _settings(current)
    diffs = [
        f"{k} {before.get(k)!r} -> {now.get(k)!r}"
        for k in sorted(before.keys() | now.keys())
        if before.get(k) != now.get(k)
    ]
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ResumeMismatchError(
            f"--resume: the run in {out} trained a hybrid of another recipe ({shown}); resume "
            "with the checkpoint the run started from, or choose another --out"
        )


def restore_weights(model: nn.Module, tensors: dict[str, torch.Tensor], out: Path) -> None:
    """Load a run's stored weights into ``model``; one line when the architectures differ."""
    load_exactly(
        model,
        tensors,
        lambda why: ResumeMismatchError(
            f"--resume: the run in {out} trained another model ({why}); resume with the "
            "checkpoint the run started from, or choose another --out"
        ),
    )


def optimizer_mismatch(out: Path, exc: Exception) -> ResumeMismatchError:
    """The error for a stored optimizer/scheduler state that does not fit this model."""
    return ResumeMismatchError(
        f"--resume: the optimizer state in {out} does not fit this model "
        f"({first_line(exc, 200)}); resume "
        "with the checkpoint and options the run started with, or choose another --out"
    )


def previous_records(out: Path, state: dict[str, Any], epochs: int) -> list[dict[str, Any]]:
    """The per-epoch records a resumed run keeps: the state's own, or (older states) the
    first line of each finished epoch in metrics.jsonl."""
    if "history" in state:
        return list(state["history"])
    kept: dict[int, dict[str, Any]] = {}
    for r in read_metrics(out):
        e = r.get("epoch")
        if isinstance(e, int) and 1 <= e <= epochs:
            kept.setdefault(e, r)
    return [kept[e] for e in sorted(kept)]
