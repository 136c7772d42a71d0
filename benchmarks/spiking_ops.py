"""Benchmark: encode -> LIF -> decode forward+backward against ReLU forward+backward.

Runs, in one process on the same tensor: ReLU, hybridize.spiking (BitPlaneEncoder -> LIF ->
BitPlaneDecoder) and a naive reference written here (a Python loop over planes that keeps every
per-plane tensor alive for autograd). Prints the median time of each, the ratios, and the peak
memory: on CUDA torch.cuda.max_memory_allocated over the step; on CPU the bytes of the tensors
autograd saves for backward (counted once per storage through saved_tensors_hooks), which is
what a forward pass keeps alive until backward.

    .venv/bin/python benchmarks/spiking_ops.py [--device cuda] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder

BITS = 8


def naive_encode_lif_decode(x: torch.Tensor) -> torch.Tensor:
    """The straightforward implementation: one tensor per plane, surrogate via the detach
    trick (the smooth primitive's graph is kept for every plane), LIF and decode in loops."""
    lo, hi = x.min(), x.max()
    z = (x - lo) / (hi - lo) * (2**BITS - 1)
    planes = []
    for t in range(BITS):
        k = BITS - 1 - t
        hard = torch.remainder(torch.floor(torch.round(z) / 2**k), 2)
        u = math.pi * z / 2**k
        smooth = 0.5 * z - (2 / math.pi) * sum(torch.sin(n * u) / n for n in range(1, 10, 2))
        factor = k / 2 ** (BITS - 1 - k)
        planes.append(hard.detach() + factor * (smooth - smooth.detach()))
    v = torch.zeros_like(x)
    spikes = []
    for p in planes:
        h = v + (p - v) / 2.0
        sg = torch.atan(math.pi / 2 * 2.0 * (h - 1.0)) / math.pi + 0.5
        s = (h >= 1.0).to(h.dtype).detach() + (sg - sg.detach())
        v = h * (1.0 - s)
        spikes.append(s)
    return sum(s * (2 ** (BITS - 1 - t) / (2**BITS - 1)) for t, s in enumerate(spikes))


def make_hybridize() -> Callable[[torch.Tensor], torch.Tensor]:
    enc = BitPlaneEncoder(bits=BITS, normalize="minmax")
    lif = LIF()
    dec = BitPlaneDecoder(bits=BITS)
    return lambda x: dec(lif(enc(x)))


def step(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> None:
    xi = x.detach().requires_grad_()
    fn(xi).sum().backward()


def saved_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x.detach().requires_grad_()).sum()
    out.backward()
    return sum(storages.values())


def peak_cuda_bytes(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(fn, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def median_seconds(fn, x: torch.Tensor, repeats: int, cuda: bool) -> float:
    for _ in range(3):
        step(fn, x)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(fn, x)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", default="32,64,16,16", help="comma-separated input shape")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    shape = tuple(int(s) for s in args.shape.split(","))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).to(args.device)
    cases = {
        "relu": torch.relu,
        "hybridize": make_hybridize(),
        "naive": naive_encode_lif_decode,
    }
    print(
        f"device={args.device} shape={shape} float32 T={BITS} repeats={args.repeats} "
        f"threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    mem_kind = "peak CUDA bytes above baseline" if cuda else "autograd saved-tensor bytes"
    results = {}
    for name, fn in cases.items():
        t = median_seconds(fn, x, args.repeats, cuda)
        mem = peak_cuda_bytes(fn, x) if cuda else saved_bytes(fn, x)
        results[name] = (t, mem)
    relu_t, relu_m = results["relu"]
    for name, (t, mem) in results.items():
        print(
            f"{name:10s} fwd+bwd median {t * 1e3:9.3f} ms  x{t / relu_t:8.1f} relu   "
            f"{mem / 2**20:9.1f} MiB ({mem_kind}, x{mem / max(relu_m, 1):.1f} relu)"
        )
    hyb_t, hyb_m = results["hybridize"]
    naive_t, naive_m = results["naive"]
    print(f"hybridize vs naive: time x{hyb_t / naive_t:.2f}, memory x{hyb_m / naive_m:.2f}")


if __name__ == "__main__":
    main()
