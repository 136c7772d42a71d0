"""Which path and dtype the spiking ops compute in (torch helpers shared by the modules)."""

from __future__ import annotations

import torch


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types cannot hold 2^B - 1 exactly for B > 8 (bf16: B > 8); compute in float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def exporting(export_mode: bool) -> bool:
    """True when the standard ops must run: export mode, or a JIT trace/script, an ONNX export
    or ``torch.export`` in progress (the exported graph must see no custom function)."""
    if export_mode or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return is_exporting is not None and is_exporting()


def use_custom_backward(x: torch.Tensor, export_mode: bool) -> bool:
    """True when a surrogate autograd.Function is needed (a gradient is wanted, not exporting)."""
    return torch.is_grad_enabled() and x.requires_grad and not exporting(export_mode)
