"""Benchmark: the fused encoder backward's two cosine schemes, side by side in one process.

"direct" takes one float32 cosine per angle (B + 1 per element: the default);
"doubling" takes one float64 cosine and the rest by cos(2u) = 2 cos(u)^2 - 1. For each scheme, compiled: the median CPU time of the kernel alone on M elements (B = 8
planes, fourier alpha 5, the chain's defaults), and over a dense sweep of z in [0, 2^B - 1] the
largest error of every plane's d_k(z) against the float64 formula (surrogates.py's, at the same
float32-rounded angles U 2^-k, U = fl32(pi z), as eager takes them), in units of max |d_k|;
beside the same error of the eager float32 surrogate; and the cost of one compiled cosine over
the same M elements in float32 and in float64 (what the schemes trade).

    .venv/bin/python benchmarks/encoder_backward.py [--repeats 11] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from hybridize.spiking.encoder import significance
from hybridize.spiking.kernels import encoder as enc_kernels
from hybridize.spiking.kernels._select import run_kernel
from hybridize.spiking.surrogates import ENCODER_SURROGATES

BITS, ALPHA, OFFSET = 8, 5.0, 0.0
SCHEMES = ("direct", "doubling")


def config() -> enc_kernels.EncoderKernelConfig:
    ks = tuple(int(k) for k in significance(BITS, "msb", torch.device("cpu")).tolist())
    return enc_kernels.EncoderKernelConfig(ks, "round", "fourier", ALPHA, OFFSET, BITS)


def backward(scheme: str, z: torch.Tensor, grad: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    cfg = config()
    key = ("encoder_backward", cfg, scheme)
    return run_kernel(key, enc_kernels.encoder_backward, z, grad, w, cfg, scheme)


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def reference(z: torch.Tensor, k: int) -> torch.Tensor:
    """d_k in float64 at eager's float32 angle (fl32(z * fl32(pi)) 2^-k, exact in float64)."""
    u32 = (z * torch.tensor(math.pi, dtype=torch.float32)).double()
    harmonics = int(ALPHA)
    total = sum(torch.cos(n * u32 * 2.0**-k) for n in range(1, 2 * harmonics, 2))
    return OFFSET - 2.0 * 2.0**-k * total


def sweep_errors(scheme: str | None, z: torch.Tensor) -> list[float]:
    """Per plane: max |d_k - reference| / max |reference| (scheme None: eager float32)."""
    cfg, errors = config(), []
    ones = torch.ones(len(cfg.ks))
    for t, k in enumerate(cfg.ks):
        if scheme is None:
            kt = torch.tensor(float(k))
            d = ENCODER_SURROGATES["fourier"].derivative(z, kt, ALPHA, OFFSET, BITS)
        else:
            grad = torch.zeros(len(cfg.ks), z.numel())
            grad[t] = 1.0
            d = backward(scheme, z, grad, ones)
        ref = reference(z, k)
        errors.append(float((d.double() - ref).abs().max() / ref.abs().max()))
    return errors


def cosine_cost(z: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median CPU seconds of one compiled cosine over z in float32 and in float64 (the
    doubling scheme's one float64 cosine against one of direct's B + 1 float32 ones)."""
    fns = {
        "float32": torch.compile(lambda v: torch.cos(v * 0.0245), dynamic=True),
        "float64": torch.compile(lambda v: torch.cos(v.double() * 0.0245).float(), dynamic=True),
    }
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn(z)  # build
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(cpu_seconds(lambda fn=fn: fn(z)))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--numel", type=int, default=32 * 64 * 16 * 16)
    parser.add_argument("--sweep", type=int, default=1 << 22, help="points in [0, 2^B - 1]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(args.numel, generator=gen) * (2**BITS - 1)
    grad = torch.randn(BITS, args.numel, generator=gen)
    w = torch.rand(BITS, generator=gen)
    with torch.no_grad():
        out = {s: backward(s, z, grad, w) for s in SCHEMES}  # builds both kernels
        diff = (out["doubling"] - out["direct"]).abs().max() / out["direct"].abs().max()
        print(f"M={args.numel} threads={torch.get_num_threads()} torch={torch.__version__}")
        print(f"doubling vs direct on the timed input: max |diff| / max |dz| = {diff:.1e}")
        times: dict[str, list[float]] = {s: [] for s in SCHEMES}
        for _ in range(3):
            for s in SCHEMES:
                backward(s, z, grad, w)
        for _ in range(args.repeats):  # interleaved: the load moves both alike
            for s in SCHEMES:
                times[s].append(cpu_seconds(lambda s=s: backward(s, z, grad, w)))
        for s in SCHEMES:
            print(f"{s:9s}: {statistics.median(times[s]) * 1e3:7.2f} ms CPU (median)")
        direct, doubling = (statistics.median(times[s]) for s in SCHEMES)
        print(f"doubling is x{direct / doubling:.2f} faster than direct")
        cos = cosine_cost(z, args.repeats)
        print(
            f"one compiled cosine over z: float32 {cos['float32'] * 1e3:.2f} ms, float64 "
            f"{cos['float64'] * 1e3:.2f} ms CPU (x{cos['float64'] / cos['float32']:.1f})"
        )
        zs = torch.linspace(0, 2**BITS - 1, args.sweep)
        for label, scheme in (("eager f32", None), ("direct", "direct"), ("doubling", "doubling")):
            errors = sweep_errors(scheme, zs)
            print(f"sweep {label:9s}: max err / max|d_k| per plane " + " ".join(
                f"{e:.1e}" for e in errors))  # fmt: skip


if __name__ == "__main__":
    main()
