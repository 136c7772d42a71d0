"""Train-step time of a model and its hybrid with eager ops and with the fused kernels,
interleaved in one process (ANN, hybrid eager, hybrid fused, ANN, ...) so that a shared
machine's load drift hits all three alike; prints the medians and the hybrid/ANN ratios.
``--malloc both`` runs the rounds with glibc's malloc as it is, then again after
``retain_freed_memory()`` (no mmap, no trim: docs/performance.md), in one process.
``--clock cpu`` times each step by the process's CPU seconds instead of the wall clock (on a
shared machine, contention then changes no figure; one thread, so they are the step's own).
``--eval`` also times an eval pass (eval mode, no grad) of each, interleaved the same way, and
prints images per second. ``--profile`` then profiles one more step of each (torch.profiler) and
splits its CPU time into convolution, BatchNorm, the fused kernels (by name) and the rest (with
``--eval``, one eval pass too).

    .venv/bin/python benchmarks/train_step.py --model tf_efficientnet_lite0 \
        --recipe has8-finetune --img-size 64 --batch-size 32 --rounds 5 --threads 1 \
        [--eval] [--malloc system|retain|both] [--clock wall|cpu] [--amp off|bf16] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

import hybridize
from hybridize.spiking.kernels import kernel_backend_override
from hybridize.train.allocator import retain_freed_memory

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]  # --clock: what a step's time is
AMP = {"off": None, "bf16": torch.bfloat16}
amp_dtype: torch.dtype | None = None  # --amp: autocast dtype of the forward passes


def _autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)


def train_step(model, opt, x, y) -> float:
    start = clock()
    with _autocast():
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return clock() - start


def eval_pass(model, x) -> float:
    """Seconds of one forward in eval mode without grad (the model is left in train mode)."""
    model.eval()
    try:
        start = clock()
        with torch.no_grad(), _autocast():
            model(x)
        return clock() - start
    finally:
        model.train()


# aten ops by part of a train step (self CPU time); the fused kernels are the profiler ranges
# "hybridize::<kernel>" that run_kernel opens (their total time, compiled code included)
PARTS = {
    "aten::mkldnn_convolution": "conv forward",
    "aten::thnn_conv2d": "conv forward",
    "aten::_slow_conv2d_forward": "conv forward",
    "aten::convolution_backward": "conv backward",
    "aten::native_batch_norm": "BatchNorm forward",
    "aten::native_batch_norm_backward": "BatchNorm backward",
}


def profile_step(model, opt, x, y, *, evaluate: bool = False) -> dict[str, float]:
    """CPU seconds of one train step (or eval pass) by part (see PARTS), the rest as "other"."""
    with torch.profiler.profile() as prof:
        if evaluate:
            eval_pass(model, x)
        else:
            train_step(model, opt, x, y)
    parts: dict[str, float] = {}
    total = 0.0
    for e in prof.key_averages():
        total += e.self_cpu_time_total
        part = PARTS.get(e.key)
        if e.key.startswith("hybridize::"):
            parts[e.key] = parts.get(e.key, 0.0) + e.cpu_time_total
        elif part is not None:
            parts[part] = parts.get(part, 0.0) + e.self_cpu_time_total
    parts["other"] = total - sum(parts.values())
    return {k: v / 1e6 for k, v in parts.items()}


def measure(runs: dict, opts: dict, x, y, args) -> dict:
    """Interleaved rounds of each run (train step, eval pass with ``--eval``); prints and
    returns the medians, and the process's user / system CPU seconds over the rounds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    eval_times: dict[str, list[float]] = {name: [] for name in runs}
    first: dict[str, float] = {}
    for r in range(args.rounds + 1):  # round 0 warms up (and builds the kernels)
        if r == 1:
            cpu = os.times()
        for name, (model, backend) in runs.items():
            with kernel_backend_override(backend):
                t = train_step(model, opts[name], x, y)
                if args.eval:
                    t_eval = eval_pass(model, x)
            if r == 0:
                first[name] = t
            else:
                times[name].append(t)
                if args.eval:
                    eval_times[name].append(t_eval)
    end = os.times()
    user, system = end.user - cpu.user, end.system - cpu.system
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, t in med.items():
        print(
            f"{name:13s} step median {t:8.3f} s  x{t / med['ann']:6.2f} ANN  "
            f"(first step {first[name]:.1f} s)"
        )
    e, f = med["hybrid eager"] / med["ann"], med["hybrid fused"] / med["ann"]
    print(f"hybrid/ANN ratio: eager {e:.2f}, fused {f:.2f} (x{e / f:.2f} lower)")
    eval_med = {name: statistics.median(v) for name, v in eval_times.items() if v}
    for name, t in eval_med.items():
        print(
            f"{name:13s} eval median {t:8.3f} s  {args.batch_size / t:8.1f} img/s  "
            f"x{eval_med['ann'] / t:6.3f} ANN's img/s"
        )
    print(f"process CPU over the timed rounds: user {user:.1f} s, system {system:.1f} s")
    return {
        "median_s": med,
        "eval_median_s": eval_med,
        "first_s": first,
        "cpu_user_s": user,
        "cpu_system_s": system,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--recipe", default="has8-finetune")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--eval", action="store_true", help="also time eval passes (no grad)")
    p.add_argument(
        "--malloc",
        choices=("system", "retain", "both"),
        default="system",
        help="glibc malloc as it is, with retain_freed_memory (no mmap, no trim), or both: "
        "the rounds with the system's, then again after retain_freed_memory, in one process",
    )
    p.add_argument("--profile", action="store_true", help="split one more step's CPU time")
    p.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="time steps by the wall clock, or by the process's CPU time (user + system; with "
        "--threads 1 the step's own CPU seconds, whatever else shares the machine)",
    )
    p.add_argument(
        "--memory-format",
        choices=("contiguous", "channels_last", "channels_last_input"),
        default="contiguous",
        help="memory format of both models and the input (timm's --channels-last), or of the "
        "input only (the convolutions then run channels-last on weights as they are)",
    )
    p.add_argument(
        "--amp",
        choices=tuple(AMP),
        default="off",
        help="autocast the forward passes of every model (bf16: the CPU's mixed precision)",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args()
    global clock, amp_dtype
    clock, amp_dtype = CLOCKS[args.clock], AMP[args.amp]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    example = torch.zeros(1, 3, args.img_size, args.img_size)
    ann = hybridize.create_model(args.model, num_classes=10).train()
    hybrid = hybridize.convert(
        hybridize.create_model(args.model, num_classes=10), args.recipe, example_input=example
    ).train()
    for m in hybrid.modules():  # has8-finetune starts its gates at 0: open them a little
        gate = getattr(m, "gate", None)
        if isinstance(gate, torch.nn.Parameter):
            gate.data.fill_(0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    if args.memory_format == "channels_last":
        ann, hybrid = (m.to(memory_format=torch.channels_last) for m in (ann, hybrid))
    if args.memory_format != "contiguous":
        x = x.contiguous(memory_format=torch.channels_last)
    runs = {
        "ann": (ann, "eager"),
        "hybrid eager": (hybrid, "eager"),
        "hybrid fused": (hybrid, "auto"),
    }
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, (m, _) in runs.items()}
    phases = ["system", "retain"] if args.malloc == "both" else [args.malloc]
    record: dict = {"args": vars(args), "phases": {}}
    for phase in phases:
        if phase == "retain" and not retain_freed_memory():
            raise SystemExit("retain_freed_memory is not available here (glibc only)")
        print(
            f"{args.model} + {args.recipe}, {args.img_size} px, batch {args.batch_size}, "
            f"threads {torch.get_num_threads()}, {args.rounds} interleaved rounds, "
            f"malloc {phase}, {args.clock} clock, amp {args.amp}"
        )
        record["phases"][phase] = measure(runs, opts, x, y, args)
    profiles: dict[str, dict[str, float]] = {}
    if args.profile:
        for name, (model, backend) in runs.items():
            with kernel_backend_override(backend):
                profiles[name] = profile_step(model, opts[name], x, y)
                if args.eval:
                    profiles[f"{name} eval"] = profile_step(model, opts[name], x, y, evaluate=True)
        print("CPU seconds of one profiled step, by part:")
        for name, parts in profiles.items():
            line = ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])
            )
            print(f"{name:18s} total {sum(parts.values()):.2f}: {line}")
    if args.json:
        record["profile"] = profiles
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
