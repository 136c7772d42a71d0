"""The manifest of a NIR export: what each region is, and how to feed and read its graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from hybridize.spiking.fusion import FusionBlock

FORMAT = "hybridize-nir/1"

LIF_MAPPING = (
    "Our LIF per step t: H = V + (X - (V - V_reset)) / tau (decay_input) or "
    "H = V - (V - V_reset) / tau + X; S = [H >= V_th]; V = V_reset if S else H, V starts at "
    "V_reset. NIR LIF: tau_n dv/dt = (v_leak - v) + R I, z = [v > v_threshold], v = v_reset "
    "on z. Forward Euler with step dt gives v += (dt / tau_n) (v_leak - v + R I), which is ours "
    "with tau_n = tau * dt, v_leak = v_reset = 0, R = 1 (decay_input) or R = tau. NIR's "
    "threshold is strict (v > v_threshold), ours is not (H >= V_th): v_threshold is the float32 "
    "just below V_th, so that both fire on H == V_th. Soft reset and v_reset != 0 are refused "
    "(no NIR form)."
)


def encoder_info(encoder: nn.Module) -> dict[str, Any]:
    """The encoder's settings, the range it normalizes with, and which plane each step is."""
    from dataclasses import asdict

    from hybridize.spiking import BitPlaneEncoder

    if not isinstance(encoder, BitPlaneEncoder):
        return {"type": type(encoder).__name__}
    info: dict[str, Any] = {"type": "BitPlaneEncoder", **asdict(encoder.options)}
    mode = encoder.options.normalize
    if mode == "running":
        info["range"] = [float(encoder.running_min), float(encoder.running_max)]
        info["range_note"] = "frozen running range (eval mode); r = clamp((x - lo) / (hi - lo))"
    elif mode == "fixed":
        info["range"] = [encoder.options.lo, encoder.options.hi]
        info["range_note"] = "fixed range; r = clamp((x - lo) / (hi - lo))"
    elif mode == "minmax":
        info["range"] = None
        info["range_note"] = "per-sample min and max of the input (data dependent)"
    else:
        info["range"] = None
        info["range_note"] = (
            "auto: x itself if all of it lies in [0, 1], else the min and max of the whole "
            "batch (data dependent)"
        )
    info["time_steps"] = encoder.time_steps
    info["plane_of_step"] = _significance(encoder.bits, encoder.order)
    return info


def _significance(bits: int, order: str) -> list[int]:
    from hybridize.spiking.encoder import significance

    return [int(k) for k in significance(bits, order)]


def decoder_info(decoder: nn.Module) -> dict[str, Any]:
    """The decoder's kind, order and per-step weights."""
    from hybridize.spiking import BitPlaneDecoder
    from hybridize.spiking.decoder import decoder_weights

    if not isinstance(decoder, BitPlaneDecoder):
        return {"type": type(decoder).__name__}
    info: dict[str, Any] = {
        "type": "BitPlaneDecoder",
        "kind": decoder.kind,
        "bits": decoder.bits,
        "order": decoder.order,
        "compat": decoder.compat,
    }
    if decoder.kind == "bitplane":
        w = decoder_weights(decoder.bits, decoder.order, compat=decoder.compat)
        info["weights"] = [float(v) for v in w]
        info["rule"] = "y = sum_t weights[t] * out_t"
    else:
        info["rule"] = "y = mean_t out_t"
    return info


def gate_info(fusion: FusionBlock | None) -> dict[str, Any] | None:
    """The fusion gate's kind and value (None for a replace-mode branch)."""
    if fusion is None:
        return None
    g = fusion.gate.detach().cpu()
    return {
        "kind": fusion.gate_kind,
        "value": float(g) if g.ndim == 0 else [float(v) for v in g],
        "rule": "y = ann(x) + gate * decode(twin(encode(x)))",
    }


def manifest(
    model: nn.Module,
    example: torch.Tensor,
    dt: float,
    rows: list[dict[str, Any]],
    onnx_info: dict[str, Any],
) -> dict[str, Any]:
    """The whole manifest: model, recipe, dt, the LIF mapping, the ONNX file and the regions."""
    import nir

    meta = getattr(model, "hybridize_meta", None)
    meta = meta if isinstance(meta, dict) else {}
    recipe = meta.get("recipe") or {}
    return {
        "format": FORMAT,
        "nir_version": getattr(nir, "version", None),
        "model": meta.get("model"),
        "recipe": recipe.get("name") if isinstance(recipe, dict) else None,
        "example_shape": list(example.shape),
        "dt": dt,
        "lif_mapping": LIF_MAPPING,
        "layout": (
            "NIR shapes are per sample without batch or time: [C, H, W] or [D]; one NIR "
            "step = one time step of the twin = one bit plane"
        ),
        "onnx": onnx_info,
        "regions": rows,
    }
