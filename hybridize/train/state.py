"""Checkpoints of a run: the model (hybrid format, atomic) and the training state beside it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridize._atomic import atomic_path
from hybridize._util import first_line, load_exactly
from hybridize.errors import CheckpointError

STATE_SUFFIX = ".state.pt"
PLAIN_FORMAT = "plain"  # a non-hybrid model's state_dict (the ANN baseline of a run)


def rng_state() -> dict[str, Any]:
    """RNG states of torch, CUDA, python and numpy, as tensors/ints (``weights_only``-safe)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64)},
        "python_gauss": gauss,
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), state["python_gauss"]))
    npst = state["numpy"]
    keys = npst["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, npst["pos"], npst["has_gauss"], npst["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def save_model(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``: hybrids (carrying ``hybridize_meta``) in the hybrid format through
    ``hybridize.io.save``; plain modules as a bare safetensors state_dict. Atomic either way."""
    path = Path(path)
    if hasattr(model, "hybridize_meta"):
        from hybridize.io import save

        save(model, path)
        return path
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"hybridize.format": PLAIN_FORMAT}
    spec = getattr(model, "hybridize_spec", None)
    if isinstance(spec, dict):  # from hybridize.create_model: enough to rebuild the module
        meta["hybridize.model"] = json.dumps(spec, sort_keys=True, default=str)
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint written by :func:`save_model` (one line when unreadable)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check --out or drop --resume")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors' header and I/O errors
        raise CheckpointError(
            f"cannot read checkpoint {path} ({first_line(exc)}); the file is damaged, save it again"
        ) from None


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the tensors of a checkpoint written by :func:`save_model` into ``model``."""
    load_exactly(
        model,
        read_weights(path),
        lambda why: CheckpointError(
            f"{path} does not fit the model its metadata names ({why}); the file is damaged or "
            "was edited, save it again"
        ),
    )


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write the training state with ``torch.save`` (tensors and plain containers only)."""
    _atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read a training state written by :func:`save_state` (``weights_only=True``); with
    ``mmap`` its tensors are mapped from the file, read only where touched."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"training state {path} not found; resume needs the folder of an earlier run (--out)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(  # torch's own messages run over many lines: the first one
            f"cannot read training state {path} ({first_line(exc, 200)}); start afresh without "
            "--resume"
        ) from None


def state_path(model_path: str | Path) -> Path:
    """``last.safetensors`` -> ``last.state.pt``."""
    p = Path(model_path)
    return p.with_name(p.name.removesuffix(".safetensors") + STATE_SUFFIX)


def load_model(path: str | Path) -> nn.Module:
    """A checkpoint as a module: hybrids through ``hybridize.io.load``; plain checkpoints
    written by :func:`save_model` rebuilt from their model spec."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file; give the .safetensors file"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:
        meta = {}
    if meta.get("hybridize.format") != PLAIN_FORMAT:
        from hybridize.io import load

        return load(path)
    if "hybridize.model" not in meta:
        raise CheckpointError(
            f"{path} holds a bare state_dict with no model spec; load it into your module "
            "with safetensors.torch.load_file instead"
        )
    from hybridize.models import create_from_spec

    try:
        spec = json.loads(meta["hybridize.model"])
    except ValueError:
        spec = None
    if not isinstance(spec, dict):
        raise CheckpointError(
            f"{path}: its hybridize.model metadata is not a JSON object; the file is damaged, "
            "save it again"
        )
    spec.pop("weights_source", None)
    model = create_from_spec(spec)
    load_weights(model, path)
    return model


def resolve_model(model_or_path: nn.Module | str | Path) -> nn.Module:
    """A module as given, or the checkpoint at a path loaded with :func:`load_model`."""
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    return load_model(model_or_path)
