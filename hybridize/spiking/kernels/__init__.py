"""Fused kernels for the spiking chain (encoder, LIF), one source for CPU and CUDA.

Each kernel is a pure tensor function with the time loop unrolled, forward and backward written
explicitly, compiled by torch.compile (inductor: vectorised C++ on CPU, Triton on CUDA) once per
configuration and dtype with dynamic shapes, and called from a custom autograd.Function.
Selection is automatic (see :func:`kernel_backend`); ``HYBRIDIZE_KERNELS=eager|fused|auto`` or
:func:`set_kernel_backend` forces a path. See docs/spiking.md, "Kernels".
"""

from hybridize.spiking.kernels._select import (
    AUTO_MIN_NUMEL,
    ENV_VAR,
    KERNEL_BACKENDS,
    kernel_backend,
    kernel_backend_override,
    run_kernel,
    set_kernel_backend,
    use_fused,
)
from hybridize.spiking.kernels.bn_lif import fused_lif
from hybridize.spiking.kernels.compact import (
    compact_binary_saves,
    compacting,
    compacting_binary_saves,
    mark_binary,
)
from hybridize.spiking.kernels.encoder import (
    EncoderKernelConfig,
    FusedBitPlane,
    encoder_backward,
    encoder_forward,
    encoder_kernel_config,
    fused_planes,
)
from hybridize.spiking.kernels.lif import (
    FusedLIF,
    LIFConfig,
    divides_as_eager,
    fused_lif_spikes,
    lif_backward,
    lif_forward,
    lif_spikes,
)
from hybridize.spiking.kernels.range_encoder import (
    FusedRangeBitPlane,
    RangeConfig,
    fuses_range,
    range_encoder_backward,
    range_encoder_forward,
    range_planes,
)

__all__ = [
    "AUTO_MIN_NUMEL",
    "ENV_VAR",
    "EncoderKernelConfig",
    "FusedBitPlane",
    "FusedLIF",
    "FusedRangeBitPlane",
    "KERNEL_BACKENDS",
    "LIFConfig",
    "RangeConfig",
    "divides_as_eager",
    "encoder_backward",
    "encoder_forward",
    "encoder_kernel_config",
    "fused_lif",
    "fused_lif_spikes",
    "fused_planes",
    "fuses_range",
    "compact_binary_saves",
    "compacting",
    "compacting_binary_saves",
    "kernel_backend",
    "kernel_backend_override",
    "lif_backward",
    "lif_forward",
    "lif_spikes",
    "mark_binary",
    "range_encoder_backward",
    "range_encoder_forward",
    "range_planes",
    "run_kernel",
    "set_kernel_backend",
    "use_fused",
]
