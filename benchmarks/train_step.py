"""Train-step time of a model and its hybrid with eager ops and with the fused kernels,
interleaved in one process (ANN, hybrid eager, hybrid fused, ANN, ...) so that a shared
machine's load drift hits all three alike; prints the medians and the hybrid/ANN ratios.

    .venv/bin/python benchmarks/train_step.py --model tf_efficientnet_lite0 \
        --recipe has8-finetune --img-size 64 --batch-size 32 --rounds 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import hybridize
from hybridize.spiking.kernels import kernel_backend_override


def train_step(model, opt, x, y) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--recipe", default="has8-finetune")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
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
    runs = {
        "ann": (ann, "eager"),
        "hybrid eager": (hybrid, "eager"),
        "hybrid fused": (hybrid, "auto"),
    }
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, (m, _) in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    first: dict[str, float] = {}
    for r in range(args.rounds + 1):  # round 0 warms up (and builds the kernels)
        for name, (model, backend) in runs.items():
            with kernel_backend_override(backend):
                t = train_step(model, opts[name], x, y)
            if r == 0:
                first[name] = t
            else:
                times[name].append(t)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(
        f"{args.model} + {args.recipe}, {args.img_size} px, batch {args.batch_size}, "
        f"threads {torch.get_num_threads()}, {args.rounds} interleaved rounds"
    )
    for name, t in med.items():
        print(
            f"{name:13s} step median {t:8.3f} s  x{t / med['ann']:6.2f} ANN  "
            f"(first step {first[name]:.1f} s)"
        )
    e, f = med["hybrid eager"] / med["ann"], med["hybrid fused"] / med["ann"]
    print(f"hybrid/ANN ratio: eager {e:.2f}, fused {f:.2f} (x{e / f:.2f} lower)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "median_s": med, "first_s": first}, fh, indent=2)


if __name__ == "__main__":
    main()
