"""Checks of option values done before any work: devices, output files and run folders."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from hybridize.errors import HybridizeError

AMP_MODES = ("bf16", "fp16", "off")  # --amp of finetune and evaluate


def amp_callback(value: str | None) -> str | None:
    """``--amp``: one of :data:`AMP_MODES` (a callback, not a Literal: older typers lack it)."""
    if value is not None and value not in AMP_MODES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(AMP_MODES)}")
    return value


def device_callback(value: str | None) -> str | None:
    """``--device``: auto, cpu, cuda, cuda:N or mps, and present on this machine."""
    if value is None or value == "auto":
        return value
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise typer.BadParameter(
            f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise typer.BadParameter(f"{value!r}: no CUDA device here; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise typer.BadParameter(f"{value!r}: this machine has {count} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise typer.BadParameter(f"{value!r}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise typer.BadParameter(f"{value!r} is not supported; use auto, cpu, cuda or cuda:N")
    return value


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HybridizeError(
            f"{option} {path}: cannot write in folder {folder} (no permission or read-only); "
            "choose another path"
        )


def output_file(path: Path | None, option: str) -> None:
    """A file to be written: not a folder, in an existing folder we may write in."""
    if path is None:
        return
    if path.is_dir():
        raise HybridizeError(
            f"{option} {path} is a folder; give a file name, e.g. {path / 'model.safetensors'}"
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HybridizeError(f"{option} {path}: folder {parent} does not exist; create it first")
    _writable_folder(parent, option, path)


def run_folder(path: Path, option: str = "--out") -> None:
    """A run folder, new or existing: not a file, below a folder we may write in."""
    if path.exists() and not path.is_dir():
        raise HybridizeError(f"{option} {path} is a file; give a folder (new, or the run's)")
    _below_writable(path, path, option)


def export_folder(path: Path, option: str) -> None:
    """A folder an export writes whole (a temporary beside it, renamed onto it): not a file,
    in a folder we may write in."""
    if path.exists() and not path.is_dir():
        raise HybridizeError(
            f"{option} {path} is a file; give a folder (new, or an earlier NIR export's)"
        )
    _below_writable(path.parent, path, option)


def output_folder(path: Path | None, option: str) -> None:
    """A folder files are written into, new or existing: not a file, below a folder we may
    write in."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise HybridizeError(f"{option} {path} is a file; give a folder")
    _below_writable(path, path, option)


def input_file(path: Path | None, option: str) -> None:
    """A file to be read: present, and a file."""
    if path is None:
        return
    if not path.exists():
        raise HybridizeError(f"{option} {path}: no such file; check the path")
    if not path.is_file():
        raise HybridizeError(f"{option} {path} is a folder; give the file inside it")


def _below_writable(start: Path, path: Path, option: str) -> None:
    existing = start
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise HybridizeError(f"{option} {path}: {existing} is a file, not a folder")
    _writable_folder(existing, option, path)
