"""Hybrid checkpoints: one safetensors file, tensors = state_dict, metadata = JSON strings.

A checkpoint is data, never code: ``load`` rebuilds the base model from its recorded spec,
re-applies the stored recipe and loads the tensors strictly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._atomic import atomic_path
from hybridize.errors import CheckpointError, HybridizeError

FORMAT_VERSION = 1
_KEYS = ("model", "recipe", "example_shape")


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        header = f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0"
        h.update(len(header).to_bytes(8, "little"))
        h.update(header.encode())
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _tensors_of(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"state_dict entry {name!r} is {type(value).__name__}, not a tensor; "
                "safetensors checkpoints hold tensors only"
            )
        # own contiguous CPU copy: tied/shared tensors would otherwise be refused by safetensors
        out[name] = value.detach().to("cpu", copy=True).contiguous()
    return out


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a converted model carrying ``hybridize_meta``) to one safetensors file.

    The write is atomic: a temporary file in the target folder, then ``os.replace``.
    """
    from safetensors.torch import save_file

    from hybridize import __version__

    meta = getattr(model, "hybridize_meta", None)
    if not isinstance(meta, Mapping) or any(k not in meta for k in _KEYS):
        raise CheckpointError(
            "model has no complete hybridize_meta (model, recipe, example_shape); "
            "save a model returned by hybridize.convert or hybridize.load"
        )
    spec = meta["model"]
    if not isinstance(spec, Mapping) or not spec.get("source") or not spec.get("name"):
        raise CheckpointError(
            "model's hybridize_meta lacks the base model spec (source, name), so load could not "
            "rebuild it; build the base model with hybridize.models.create before converting"
        )
    target = Path(path)
    if not target.parent.is_dir():
        raise CheckpointError(
            f"folder {target.parent} does not exist; create it or pick another -o path"
        )
    tensors = _tensors_of(model)
    metadata = {
        "hybridize.format": str(FORMAT_VERSION),
        "hybridize.version": __version__,
        "hybridize.model": json.dumps(meta["model"], sort_keys=True),
        "hybridize.recipe": json.dumps(meta["recipe"], sort_keys=True),
        "hybridize.example_shape": json.dumps([int(s) for s in meta["example_shape"]]),
        "hybridize.sha256": content_hash(tensors),
    }
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def _raw_metadata(p: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}; check the path")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata()
    except Exception as exc:
        raise CheckpointError(
            f"{p} is not a readable safetensors file ({type(exc).__name__}); "
            "it is corrupted or truncated: save it again"
        ) from None
    if not meta or "hybridize.format" not in meta:
        raise CheckpointError(
            f"{p} is a safetensors file without hybridize metadata; load plain weights with "
            "hybridize.models.create(NAME, weights=PATH) instead"
        )
    return meta


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (format, version, model, recipe, example_shape, sha256)."""
    p = Path(path)
    raw = _raw_metadata(p)
    try:
        fmt = int(raw["hybridize.format"])
    except ValueError:
        raise CheckpointError(f"{p}: bad hybridize.format {raw['hybridize.format']!r}") from None
    if fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format {fmt}, newer than the supported {FORMAT_VERSION}; "
            "upgrade hybridize"
        )
    out: dict[str, Any] = {"format": fmt, "version": raw.get("hybridize.version")}
    for key in (*_KEYS, "sha256"):
        text = raw.get(f"hybridize.{key}")
        if text is None:
            raise CheckpointError(f"{p} lacks metadata key hybridize.{key}; save it again")
        try:
            out[key] = text if key == "sha256" else json.loads(text)
        except json.JSONDecodeError:
            raise CheckpointError(
                f"{p}: metadata hybridize.{key} is not valid JSON; save it again"
            ) from None
    return out


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a saved hybrid: base model from its spec -> convert with the recipe -> tensors."""
    from safetensors.torch import load_file

    p = Path(path)
    meta = read_metadata(p)
    try:
        tensors = load_file(str(p), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the tensors of {p} ({type(exc).__name__}); the file is corrupted: save it again"
        ) from None
    if content_hash(tensors) != meta["sha256"]:
        raise CheckpointError(
            f"{p}: content hash mismatch, the tensors are corrupted; save it again"
        )
    from hybridize.conversion import convert
    from hybridize.models import create_from_spec

    try:
        base = create_from_spec(meta["model"])
        example = torch.zeros(meta["example_shape"])
        model = convert(base, meta["recipe"], example_input=example)
    except HybridizeError as exc:
        raise CheckpointError(f"{p}: cannot rebuild the model ({exc})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise CheckpointError(
            f"{p}: tensors do not fit the rebuilt model ({first[0].strip()}); "
            "it was saved by an incompatible hybridize version"
        ) from None
    stored = {k: meta[k] for k in _KEYS}
    current = getattr(model, "hybridize_meta", None)
    model.hybridize_meta = {**(current if isinstance(current, Mapping) else {}), **stored}
    return model.to(map_location).eval()
