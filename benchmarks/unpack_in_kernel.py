"""Side by side, one process: the BatchNorm + LIF backward kernel on float spikes widened from
their saved bits by a separate kernel (what runs), against a variant that unpacks the bits
inside the same kernel (tried and reverted; docs/performance.md). Both compiled; CPU seconds.

    .venv/bin/python benchmarks/unpack_in_kernel.py
"""

from __future__ import annotations

import statistics
import time

import torch

from hybridize.spiking.kernels import LIFConfig, kernel_backend_override, run_kernel
from hybridize.spiking.kernels.bn_lif import bn_lif_backward
from hybridize.spiking.kernels.compact import pack_bits, unpack_bits


def bn_lif_backward_bits(grad, c, bits, *rest):
    """The variant: the spikes come in as bits and are unpacked in the kernel."""
    spikes = unpack_bits(bits, grad.dtype)[: grad.numel()].reshape(grad.shape)
    return bn_lif_backward(grad, c, spikes, *rest)


def main() -> None:
    torch.set_num_threads(1)
    cfg = LIFConfig(1.0, 0.0, True, False, "atan", 2.0)
    g = torch.Generator().manual_seed(0)
    shape = (8, 32, 144, 256)  # [T, N, C, H*W]: a Lite0 twin's LIF at 64 px, batch 32
    grad, c = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    spikes = (torch.rand(shape, generator=g) < 0.3).float()
    bits = pack_bits(spikes.reshape(-1))
    mean, invstd, weight, bias = (torch.randn(shape[2], 1, generator=g) for _ in range(4))
    rest = (mean, invstd.abs(), weight, bias, 2.0, cfg, False)

    def separate():
        s = run_kernel(("unpack_bits", torch.float32), unpack_bits, bits, torch.float32)
        s = s[: spikes.numel()].reshape(shape)
        return run_kernel(
            ("bn_lif_backward", cfg, False, 2.0, True), bn_lif_backward, grad, c, s, *rest
        )

    def inside():
        key = ("bn_lif_backward_bits", cfg, False, 2.0, True)
        return run_kernel(key, bn_lif_backward_bits, grad, c, bits, *rest)

    runs = {"separate unpack + kernel": separate, "unpack inside the kernel": inside}
    with kernel_backend_override("fused"):
        assert torch.equal(separate()[0], inside()[0])  # also builds both
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(7):
            for name, fn in runs.items():
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
    print(f"shape {shape}, one thread, median of 7, CPU ms")
    for name, v in times.items():
        print(f"{name:26s} {statistics.median(v) * 1e3:8.1f}")


if __name__ == "__main__":
    main()
