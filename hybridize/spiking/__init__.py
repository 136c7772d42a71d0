"""hybridize.spiking: the maths of the hybrid ANN-SNN block (no fx, no I/O).

Bit-plane encoder with surrogate backward, LIF neuron, decoders and the fusion block, plus the
functional core they are built from, their fused kernels, and their options
(:mod:`hybridize.spiking.options`). See docs/spiking.md.

The names below are imported on first use, so that ``hybridize.spiking.options`` (torch-free)
can be imported without torch, as the recipe schema does.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "hybridize.errors": ("SpikingConfigError",),
    "hybridize.spiking.decoder": ("BitPlaneDecoder", "decode", "decoder_weights"),
    "hybridize.spiking.encoder": (
        "BitPlaneEncoder",
        "bit_planes",
        "encode",
        "normalize",
        "normalize_range",
        "order_aware_factors",
        "quantize",
        "significance",
    ),
    "hybridize.spiking.fusion": ("GATE_KINDS", "FusionBlock", "SpikingBranch"),
    "hybridize.spiking.kernels": ("KERNEL_BACKENDS", "kernel_backend", "set_kernel_backend"),
    "hybridize.spiking.neuron": (
        "LIF",
        "heaviside",
        "lif_multistep",
        "lif_step",
        "spike_function",
    ),
    "hybridize.spiking.sample_norms": (
        "GroupNormOverTime",
        "LayerNormPerStep",
        "RMSNormPerStep",
        "group_norm_over_time",
        "layer_norm_per_step",
        "normalize_over_time",
        "rms_norm_per_step",
    ),
    "hybridize.spiking.options": (
        "COMPAT_PRESETS",
        "DECODER_KINDS",
        "DEFAULT_DECODER",
        "DEFAULT_ENCODER",
        "DEFAULT_NEURON",
        "HAS8_RELEASED_ENCODER",
        "NORMALIZE_MODES",
        "ORDERS",
        "QUANTIZE_MODES",
        "RESCALE_MODES",
        "DecoderOptions",
        "EncoderOptions",
        "NeuronOptions",
        "OptionError",
        "resolve_decoder",
        "resolve_encoder",
        "resolve_neuron",
    ),
    "hybridize.spiking.surrogates": (
        "ENCODER_SURROGATES",
        "SPIKE_SURROGATES",
        "EncoderSurrogate",
        "SpikeSurrogate",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridize.spiking' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
