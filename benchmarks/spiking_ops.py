"""Benchmark: the spiking chain and the LIF alone, eager vs fused kernels (vs SpikingJelly).

Runs, in one process on the same tensor, forward + backward (gradient w.r.t. the input) of
- the chain BitPlaneEncoder(bits=8, normalize="minmax") -> LIF() -> BitPlaneDecoder(bits=8) with
  the eager ops (HYBRIDIZE_KERNELS=eager) and with the fused kernels (=fused; "fused doubling":
  the encoder backward from one float64 cosine per element, the other scheme), beside ReLU and a
  naive reference written here (a Python loop over planes that keeps every per-plane tensor);
- the multi-step LIF alone on the T = 8 planes' shape: eager, fused, and SpikingJelly's
  ``neuron.LIFNode`` (tau 2, ATan, multi-step) when spikingjelly is installed (extra ``bench``).
Prints the median time of each (repeats interleaved across cases; ``--clock cpu``: CPU
seconds), the ratios, and the memory: on CUDA max_memory_allocated over the step; on CPU the bytes autograd saves for backward (once per storage, saved_tensors_hooks).
Fused vs eager outputs and gradients are compared first. ``--first-step`` also measures, in fresh
processes, the first fused step (kernel compilation included) with an empty and a warm cache, of
the chain and of a spiking branch whose twin is conv -> BatchNorm -> LIF -> conv (its kernels:
the encoder's, the LIF forward, the BatchNorm + LIF backward, the bit packing of saves);
``--first-step-only`` measures only that.

    .venv/bin/python benchmarks/spiking_ops.py [--device cuda] [--dtype bfloat16] \
        [--repeats 15] [--threads 1] [--clock cpu] [--first-step]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder
from hybridize.spiking.kernels import encoder as encoder_kernels
from hybridize.spiking.kernels import kernel_backend_override

BITS = 8
Fn = Callable[[torch.Tensor], torch.Tensor]


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


def with_backend(fn: Fn, name: str) -> Fn:
    def run(x: torch.Tensor) -> torch.Tensor:
        with kernel_backend_override(name):
            return fn(x)

    return run


def with_doubled_cosines(fn: Fn) -> Fn:
    """fn with the fused encoder backward taking one float64 cosine per element and the others
    by the double-angle formula (the other scheme, docs/spiking.md)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        encoder_kernels.COSINES = "doubling"
        try:
            return fn(x)
        finally:
            encoder_kernels.COSINES = None

    return run


def chain() -> Fn:
    enc, lif, dec = BitPlaneEncoder(bits=BITS, normalize="minmax"), LIF(), BitPlaneDecoder(BITS)
    return lambda x: dec(lif(enc(x)))


def spikingjelly_lif() -> Fn | None:
    try:
        from spikingjelly.activation_based import functional, neuron, surrogate
    except ImportError:
        return None
    node = neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")

    def run(x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(node)  # SpikingJelly keeps V between calls
        return node(x)

    return run


def step(fn: Fn, x: torch.Tensor) -> None:
    xi = x.detach().requires_grad_()
    fn(xi).float().sum().backward()


def saved_bytes(fn: Fn, x: torch.Tensor) -> int:
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x.detach().requires_grad_()).float().sum()
    out.backward()
    return sum(storages.values())


def peak_cuda_bytes(fn: Fn, x: torch.Tensor) -> int:
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(fn, x)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter  # --clock's choice


def timed_step(fn: Fn, x: torch.Tensor, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = _clock()
    step(fn, x)
    if cuda:
        torch.cuda.synchronize()
    return _clock() - start


def agreement(fn_a: Fn, fn_b: Fn, x: torch.Tensor) -> tuple[bool, float]:
    """(forward bit-identical, max |grad difference| / max |grad|) of two implementations."""
    outs = []
    for fn in (fn_a, fn_b):
        xi = x.detach().requires_grad_()
        y = fn(xi)
        w = torch.linspace(-1, 1, y.numel(), device=y.device).reshape(y.shape)
        (y.float() * w).sum().backward()
        outs.append((y.detach(), xi.grad))
    (ya, ga), (yb, gb) = outs
    scale = ga.float().abs().max().clamp_min(1e-30)
    return torch.equal(ya, yb), float((ga.float() - gb.float()).abs().max() / scale)


def twin_branch(channels: int) -> torch.nn.Module:
    """A spiking branch whose twin is conv -> BatchNorm -> LIF -> conv: its first fused step
    builds the encoder kernels, the LIF forward, the BatchNorm + LIF backward and the bit
    packing of the saved spikes and planes."""
    from hybridize.spiking import SpikingBranch

    conv = torch.nn.Conv2d
    twin = torch.nn.Sequential(
        conv(channels, channels, 1, bias=False), torch.nn.BatchNorm2d(channels),
        LIF(time_steps=BITS), conv(channels, channels, 1),
    )  # fmt: skip
    return SpikingBranch(
        twin, BitPlaneEncoder(bits=BITS, normalize="minmax"), BitPlaneDecoder(BITS)
    )


def first_step_child(args: argparse.Namespace) -> None:
    """In a fresh process: seconds of the first and second fused steps of the chain or twin."""
    x = make_input(args)
    module = chain() if args.first_step_child == "chain" else twin_branch(x.shape[1]).to(x)
    fn = with_backend(module, "fused")
    cuda = args.device == "cuda"
    cpu0 = _cpu_seconds()
    first = timed_step(fn, x, cuda)
    cpu = _cpu_seconds() - cpu0
    second = timed_step(fn, x, cuda)
    print(json.dumps({"first_s": first, "first_cpu_s": cpu, "second_s": second}))


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the C++ compiler): load-independent."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def first_step(args: argparse.Namespace, what: str) -> dict[str, dict[str, float]]:
    """First fused step of ``what`` (chain, twin) with an empty inductor cache, then with the
    cache that run left."""
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
        cmd = [sys.executable, __file__, "--first-step-child", what, "--device", args.device,
               "--shape", args.shape, "--dtype", args.dtype]  # fmt: skip
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        for label in ("cold cache", "warm cache"):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            results[label] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def make_input(args: argparse.Namespace) -> torch.Tensor:
    shape = tuple(int(s) for s in args.shape.split(","))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    return x.to(device=args.device, dtype=getattr(torch, args.dtype))


def measure(cases: dict[str, Fn], x: torch.Tensor, args: argparse.Namespace) -> dict:
    """Median step time of each case, the repeats interleaved (the load moves all alike)."""
    cuda = args.device == "cuda"
    for fn in cases.values():
        for _ in range(3):
            step(fn, x)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed_step(fn, x, cuda))
    results = {}
    for name, fn in cases.items():
        mem = peak_cuda_bytes(fn, x) if cuda else saved_bytes(fn, x)
        results[name] = {"seconds": statistics.median(times[name]), "bytes": mem}
    return results


def report(title: str, results: dict, base: str, mem_kind: str) -> None:
    print(f"-- {title}")
    bt, bm = results[base]["seconds"], max(results[base]["bytes"], 1)
    for name, r in results.items():
        print(
            f"{name:14s} fwd+bwd median {r['seconds'] * 1e3:9.3f} ms  x{r['seconds'] / bt:7.2f} "
            f"{base:10s} {r['bytes'] / 2**20:8.1f} MiB ({mem_kind}, x{r['bytes'] / bm:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--shape", default="32,64,16,16", help="comma-separated input shape")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--first-step", action="store_true", help="also the compile latency")
    parser.add_argument("--first-step-only", action="store_true", help="only the compile latency")
    parser.add_argument("--first-step-child", choices=["chain", "twin"], help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--clock", default="wall", choices=list(CLOCKS), help="cpu: this process")
    args = parser.parse_args()
    global _clock
    _clock = CLOCKS["wall" if args.device == "cuda" else args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.first_step_child:
        first_step_child(args)
        return
    if args.first_step_only:
        report_first_steps(args, {})
        return
    cuda = args.device == "cuda"
    x = make_input(args)
    planes = torch.rand(BITS, *x.shape, generator=torch.Generator().manual_seed(1)).to(x) * 3
    print(
        f"device={args.device} shape={tuple(x.shape)} {args.dtype} T={BITS} "
        f"repeats={args.repeats} threads={torch.get_num_threads()} torch={torch.__version__}"
    )
    the_chain, lif = chain(), LIF().to(x.dtype)
    chain_cases = {
        "relu": torch.relu,
        "eager": with_backend(the_chain, "eager"),
        "fused": with_backend(the_chain, "fused"),
        "fused doubling": with_doubled_cosines(with_backend(the_chain, "fused")),
        "naive": naive_encode_lif_decode,
    }
    lif_cases: dict[str, Fn] = {
        "lif eager": with_backend(lif, "eager"),
        "lif fused": with_backend(lif, "fused"),
    }
    sj = spikingjelly_lif()
    if sj is not None:
        lif_cases["spikingjelly"] = sj
    start = time.perf_counter()
    step(chain_cases["fused"], x)
    step(chain_cases["fused doubling"], x)
    step(lif_cases["lif fused"], planes)
    print(f"first fused steps in this process (compilation included): "
          f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    same, rel = agreement(chain_cases["eager"], chain_cases["fused"], x)
    print(f"chain fused vs eager: forward bit-identical {same}, grad max rel diff {rel:.1e}")
    same, rel = agreement(lif_cases["lif eager"], lif_cases["lif fused"], planes)
    print(f"LIF fused vs eager: forward bit-identical {same}, grad max rel diff {rel:.1e}")
    if sj is not None:
        same, rel = agreement(lif_cases["lif eager"], sj, planes)
        print(f"LIF SpikingJelly vs eager: spikes identical {same}, grad max rel diff {rel:.1e}")
    mem_kind = "peak CUDA above baseline" if cuda else "saved for backward"
    figures = {"args": vars(args), "torch": torch.__version__}
    figures["chain"] = measure(chain_cases, x, args)
    report("encode -> LIF -> decode", figures["chain"], "eager", mem_kind)
    figures["lif"] = measure(lif_cases, planes, args)
    report(f"LIF alone on {tuple(planes.shape)}", figures["lif"], "lif eager", mem_kind)
    c, sj_lif = figures["chain"], figures["lif"].get("spikingjelly")
    for name in ("fused", "fused doubling"):
        print(
            f"chain: {name} is x{c['eager']['seconds'] / c[name]['seconds']:.2f} faster than eager"
        )
    if sj_lif is not None:
        fused = figures["lif"]["lif fused"]["seconds"]
        print(f"LIF: fused is x{sj_lif['seconds'] / fused:.2f} faster than SpikingJelly LIFNode")
    if args.first_step:
        report_first_steps(args, figures)
    elif args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


def report_first_steps(args: argparse.Namespace, figures: dict) -> None:
    """The first fused step of the chain and of a conv -> BatchNorm -> LIF twin, cold and warm."""
    for what in ("chain", "twin"):
        figures[f"first_step_{what}"] = first_step(args, what)
        for label, r in figures[f"first_step_{what}"].items():
            print(f"first fused {what} step, {label}: {r['first_s']:.1f} s wall, "
                  f"{r['first_cpu_s']:.1f} s CPU (second step {r['second_s'] * 1e3:.1f} ms)")  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
