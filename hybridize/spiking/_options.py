"""Validation helpers shared by the spiking modules (one-line user errors)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from hybridize.errors import HybridizeError, SpikingConfigError  # noqa: F401 (re-exported)


def check_choice(owner: str, key: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a one-line error."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise SpikingConfigError(
            f"{owner}: unknown {key} {value!r}; choose one of: {', '.join(allowed)}"
        )
    return value


def check_bits(owner: str, bits: Any) -> int:
    """Bits per value must be an int in 1..16 (float32 holds 2^16 - 1 exactly with margin)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise SpikingConfigError(f"{owner}: bits={bits!r} is invalid; use an integer in 1..16")
    return bits


def check_number(owner: str, key: str, value: Any, *, positive: bool = False) -> float:
    """A finite real number (optionally > 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpikingConfigError(f"{owner}: {key}={value!r} is invalid; give a number")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")) or (positive and value <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise SpikingConfigError(f"{owner}: {key}={value!r} is invalid; give {need}")
    return value


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types cannot hold 2^B - 1 exactly for B > 8 (bf16: B > 8); compute in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def use_custom_backward(x: torch.Tensor, export_mode: bool) -> bool:
    """True when a surrogate autograd.Function is needed (a gradient is wanted, not exporting)."""
    if export_mode or not (torch.is_grad_enabled() and x.requires_grad):
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    if torch.onnx.is_in_onnx_export():
        return False
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return not (is_exporting is not None and is_exporting())
