"""Benchmark: what the twins' silent-row rule for per-token norms costs a train step.

One process, one thread, side by side: a hybrid's train step (forward + backward of cross
entropy, every gate at 1) with the twins' layer norms as converted (torch's fused layer norm,
the rule applied in its backward) and with the rule switched off (plain ``F.layer_norm``), in
alternation; the median CPU time of each and their ratio. Also the layer norm op alone:
``F.layer_norm``, the fused rule, and the rule composed of plain ops (the autocast path).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/silent_norm_cost.py [--model vit_tiny_patch16_224]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any


def _median_cpu(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


@contextmanager
def _rule(enabled: bool):
    """The twins' per-step norms with the rule (as converted) or as plain torch ops."""
    import hybridize.spiking.sample_norms as norms

    original = norms.use_custom_backward
    if not enabled:
        norms.use_custom_backward = lambda x, export_mode: False
    try:
        yield
    finally:
        norms.use_custom_backward = original


def step_costs(model_name: str, size: int, batch: int, rounds: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    import hybridize
    from hybridize.spiking import FusionBlock

    torch.manual_seed(0)
    model = hybridize.create_model(model_name, num_classes=10, img_size=size)
    x, target = torch.randn(batch, 3, size, size), torch.arange(batch) % 10
    hybrid = hybridize.convert(model, "has8-finetune", example_input=x).train()
    for block in hybrid.modules():
        if isinstance(block, FusionBlock):
            with torch.no_grad():
                block.gate.fill_(1.0)

    def step() -> None:
        hybrid.zero_grad(set_to_none=True)
        F.cross_entropy(hybrid(x), target).backward()

    times: dict[str, list[float]] = {"rule": [], "plain": []}
    for i in range(rounds + 2):
        for name, enabled in (("rule", True), ("plain", False)):
            with _rule(enabled):
                cost = _median_cpu(step, 1)
            if i >= 2:  # the first rounds warm the allocator
                times[name].append(cost)
    return {k: statistics.median(v) for k, v in times.items()}


def op_costs(shape: tuple[int, ...], repeats: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from hybridize.spiking.sample_norms import layer_norm_per_step

    torch.manual_seed(0)
    x0 = torch.randn(shape)
    x0[0, 0] = 0.0  # one silent token
    c = shape[-1]
    weight, bias = torch.randn(c, requires_grad=True), torch.randn(c, requires_grad=True)

    def run(fn: Callable[..., Any], autocast: bool = False) -> Callable[[], None]:
        def once() -> None:
            x = x0.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                fn(x, (c,), weight, bias, 1e-6).sum().backward()

        return once

    cases = {
        "F.layer_norm": run(F.layer_norm),
        "rule, fused": run(layer_norm_per_step),
        "rule, composed (autocast path)": run(layer_norm_per_step, autocast=True),
    }
    for once in cases.values():
        once()
    return {name: _median_cpu(once, repeats) for name, once in cases.items()}


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    ops = op_costs((64, 197, 192), repeats=15)
    base = ops["F.layer_norm"]
    print("layer norm forward + backward, [64, 197, 192] float32 (one silent token), CPU ms:")
    for name, cost in ops.items():
        print(f"  {name:32s} {1e3 * cost:8.2f}  x{cost / base:.2f}")
    steps = step_costs(args.model, args.size, args.batch, args.rounds)
    print(f"{args.model} has8-finetune train step, {args.size} px, batch {args.batch}, CPU s:")
    print(
        f"  rule {steps['rule']:.3f}  plain {steps['plain']:.3f}  x{steps['rule'] / steps['plain']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
