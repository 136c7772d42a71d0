"""hybridize.spiking: the maths of the hybrid ANN-SNN block (no fx, no I/O).

Bit-plane encoder with surrogate backward, LIF neuron, decoders and the fusion block, plus the
functional core they are built from and their fused kernels. See docs/spiking.md.
"""

from hybridize.spiking._options import SpikingConfigError
from hybridize.spiking.decoder import DECODER_KINDS, BitPlaneDecoder, decode, decoder_weights
from hybridize.spiking.encoder import (
    COMPAT_PRESETS,
    ENCODER_DEFAULTS,
    HAS8_RELEASED_ENCODER,
    NORMALIZE_MODES,
    ORDERS,
    QUANTIZE_MODES,
    RESCALE_MODES,
    BitPlaneEncoder,
    EncoderOptions,
    bit_planes,
    encode,
    normalise,
    normalise_range,
    order_aware_factors,
    quantise,
    resolve_encoder_options,
    significance,
)
from hybridize.spiking.fusion import GATE_KINDS, FusionBlock, SpikingBranch
from hybridize.spiking.kernels import KERNEL_BACKENDS, kernel_backend, set_kernel_backend
from hybridize.spiking.neuron import LIF, heaviside, lif_multistep, lif_step, spike_function
from hybridize.spiking.surrogates import (
    ENCODER_SURROGATES,
    SPIKE_SURROGATES,
    EncoderSurrogate,
    SpikeSurrogate,
)

__all__ = [
    "BitPlaneDecoder",
    "BitPlaneEncoder",
    "COMPAT_PRESETS",
    "DECODER_KINDS",
    "ENCODER_DEFAULTS",
    "ENCODER_SURROGATES",
    "EncoderOptions",
    "EncoderSurrogate",
    "FusionBlock",
    "GATE_KINDS",
    "HAS8_RELEASED_ENCODER",
    "KERNEL_BACKENDS",
    "LIF",
    "NORMALIZE_MODES",
    "ORDERS",
    "QUANTIZE_MODES",
    "RESCALE_MODES",
    "SPIKE_SURROGATES",
    "SpikeSurrogate",
    "SpikingBranch",
    "SpikingConfigError",
    "bit_planes",
    "decode",
    "decoder_weights",
    "encode",
    "heaviside",
    "kernel_backend",
    "lif_multistep",
    "lif_step",
    "normalise",
    "normalise_range",
    "order_aware_factors",
    "quantise",
    "resolve_encoder_options",
    "set_kernel_backend",
    "significance",
    "spike_function",
]
