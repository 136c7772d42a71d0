"""Forward + backward time of a model's convolutions at the ANN's batch and at a twin's batch
(T times it: the time steps folded into the batch), one conv shape at a time, interleaved in one
process; variants of the twin's call (memory layout, input gradient) show whether a twin pays
more per element than the (1 + T) floor.

The shapes are the model's own (recorded by forward hooks on its Conv2d layers, timm's
same-padded ones included); each conv runs on random 0/1 input (a twin's planes or spikes).

    .venv/bin/python benchmarks/twin_convs.py --model tf_efficientnet_lite0 --img-size 64 \\
        --batch-size 32 --threads 1 [--malloc retain]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import hybridize
from hybridize.train.allocator import retain_freed_memory


def conv_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Conv2d, tuple]]:
    """(name, conv, input shape) of every Conv2d the model runs on ``example``."""
    seen: list[tuple[str, nn.Conv2d, tuple]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: seen.append((name, mod, tuple(inp[0].shape)))
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    return seen


def timed(
    fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median seconds of fn by ``clock`` after one warm-up call (oneDNN primitive creation)."""
    fn()
    out = []
    for _ in range(repeats):
        start = clock()
        fn()
        out.append(clock() - start)
    return statistics.median(out)


def step(conv: nn.Conv2d, x: torch.Tensor, grad_out: torch.Tensor) -> Callable[[], None]:
    """One forward + backward of ``conv`` on x (its weight always gets a gradient)."""

    def run() -> None:
        conv.weight.grad = None
        xi = x.detach().requires_grad_(x.requires_grad)
        y = conv(xi)
        y.backward(grad_out)

    return run


def shape_arguments(p: argparse.ArgumentParser, repeats: int) -> None:
    """The options that pick the model, its input and the twin's batch (shared with
    depthwise_grads.py)."""
    p.add_argument("--model", default="tf_efficientnet_lite0")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--time-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_arguments(p, repeats=5)
    p.add_argument(
        "--malloc",
        choices=("system", "retain"),
        default="system",
        help="glibc malloc as it is, or after retain_freed_memory (no mmap, no trim)",
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc == "retain" and not retain_freed_memory():
        raise SystemExit("retain_freed_memory is not available here (glibc only)")
    cpu = os.times()
    torch.manual_seed(0)
    model = hybridize.create_model(args.model, num_classes=10).eval()
    shapes = conv_shapes(model, torch.zeros(1, 3, args.img_size, args.img_size))
    b, t = args.batch_size, args.time_steps
    variants = ("ann", "twin", "twin no input grad", "twin channels_last")
    totals = dict.fromkeys(variants, 0.0)
    print(
        f"{args.model}, {args.img_size} px, batch {b} (twin {b * t}), "
        f"threads {torch.get_num_threads()}; fwd+bwd median ms, ratio twin / ann"
    )
    print(f"{'conv':28s} {'shape':24s} " + " ".join(f"{v:>19s}" for v in variants) + "  ratio")
    g = torch.Generator().manual_seed(0)
    for name, conv, shape in shapes:
        conv = conv.train().requires_grad_(True)
        ms = {}
        for variant in variants:
            n = b if variant == "ann" else b * t
            x = (torch.rand(n, *shape[1:], generator=g) < 0.3).float()
            first = name == shapes[0][0]  # the stem: its image needs no input gradient
            x.requires_grad_(not first and variant != "twin no input grad")
            with torch.no_grad():
                y = conv(x)
            grad_out = torch.randn(y.shape, generator=g)
            c = conv
            if variant == "twin channels_last":
                x = x.detach().to(memory_format=torch.channels_last).requires_grad_(x.requires_grad)
                grad_out = grad_out.to(memory_format=torch.channels_last)
                c = conv.to(memory_format=torch.channels_last)
            ms[variant] = timed(step(c, x, grad_out), args.repeats) * 1e3
            conv.to(memory_format=torch.contiguous_format)
            totals[variant] += ms[variant]
        kind = f"{conv.kernel_size[0]}x{conv.kernel_size[1]}/{conv.stride[0]}" + (
            " dw" if conv.groups > 1 else ""
        )
        print(
            f"{name[:28]:28s} {kind + ' ' + 'x'.join(map(str, shape[1:])):24s} "
            + " ".join(f"{ms[v]:19.2f}" for v in variants)
            + f"  {ms['twin'] / ms['ann']:5.1f}"
        )
    print(
        f"{'total':53s} "
        + " ".join(f"{totals[v]:19.2f}" for v in variants)
        + f"  {totals['twin'] / totals['ann']:5.1f}"
    )
    end = os.times()
    print(
        f"malloc {args.malloc}; process CPU: user {end.user - cpu.user:.1f} s, "
        f"system {end.system - cpu.system:.1f} s"
    )


if __name__ == "__main__":
    main()
