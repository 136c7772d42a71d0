"""Where a model's convolution backward goes on the CPU: for each Conv2d shape the model runs
(timm's same-padded ones included), at a twin's batch (batch x T), the forward alone, the input
gradient alone and the weight gradient alone (``aten.convolution_backward`` with one output
asked), summed over the depthwise convolutions and over the others; and, for the depthwise
ones, the weight gradient written as k x k shifted products summed over batch and space and
compiled by torch.compile (one build per kernel size, stride and padding with dynamic shapes,
or with ``--static`` one per shape; what a dedicated kernel could cost), checked against
torch's.

    .venv/bin/python benchmarks/depthwise_grads.py --model tf_efficientnet_lite0 \\
        --img-size 64 --batch-size 32 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers.padding import pad_same
from twin_convs import conv_shapes, shape_arguments, timed

import hybridize
from hybridize.train.allocator import retain_freed_memory


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    return timed(fn, repeats, clock=time.process_time) * 1e3


def shifted_weight_grad(conv: torch.nn.Conv2d, x: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
    """dL/dw of a depthwise conv (dilation 1, zero padding as conv.padding) as sum over n, p, q
    of go[n, c, p, q] * x_pad[n, c, p s + i, q s + j], one (i, j) at a time."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = F.pad(x, (pw, pw, ph, ph))
    p, q = go.shape[2], go.shape[3]
    rows = []
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i : i + sh * (p - 1) + 1 : sh, j : j + sw * (q - 1) + 1 : sw]
            rows.append((go * window).sum((0, 2, 3)))
    return torch.stack(rows, 1).reshape(-1, 1, kh, kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shape_arguments(p, repeats=3)
    p.add_argument("--static", action="store_true", help="compile per shape, not dynamic")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()  # as training runs (no page faults of large tensors)
    model = hybridize.create_model(args.model, num_classes=10).eval()
    shapes = conv_shapes(model, torch.zeros(1, 3, args.img_size, args.img_size))
    n = args.batch_size * args.time_steps
    gen = torch.Generator().manual_seed(0)
    sums = {
        kind: dict.fromkeys(("forward", "input grad", "weight grad", "shifted"), 0.0)
        for kind in ("depthwise", "other")
    }
    worst = 0.0
    compiled: dict[tuple, Callable[..., torch.Tensor]] = {}
    print(f"{args.model}, {args.img_size} px, batch {n}, threads {torch.get_num_threads()}")
    for _name, conv, shape in shapes:
        depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
        x = (torch.rand(n, *shape[1:], generator=gen) < 0.3).float()  # a twin's 0/1 input
        w = conv.weight.detach()
        if type(conv).__name__ == "Conv2dSame":  # timm's: pads in its forward, then padding 0
            x = pad_same(x, list(conv.kernel_size), list(conv.stride), list(conv.dilation))
        with torch.no_grad():
            y = F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        go = torch.randn(y.shape, generator=gen)

        def grads(mask: list[bool], x=x, w=w, go=go, conv=conv):
            return torch.ops.aten.convolution_backward(
                go, x, w, None, list(conv.stride), list(conv.padding), list(conv.dilation),
                False, [0, 0], conv.groups, mask,
            )  # fmt: skip

        def forward(x=x, w=w, conv=conv):
            return F.conv2d(x, w, None, conv.stride, conv.padding, conv.dilation, conv.groups)

        kind = "depthwise" if depthwise else "other"
        with torch.no_grad():
            sums[kind]["forward"] += cpu_ms(forward, args.repeats)
            sums[kind]["input grad"] += cpu_ms(lambda: grads([True, False, False]), args.repeats)
            sums[kind]["weight grad"] += cpu_ms(lambda: grads([False, True, False]), args.repeats)
            if depthwise and tuple(conv.dilation) == (1, 1):
                key = (conv.kernel_size, conv.stride, conv.padding)
                key += (tuple(x.shape),) if args.static else ()
                if key not in compiled:
                    compiled[key] = torch.compile(
                        lambda x, go, conv=conv: shifted_weight_grad(conv, x, go),
                        dynamic=not args.static,
                    )
                fast = compiled[key]
                ref = grads([False, True, False])[1]
                shifted = fast(x, go)
                worst = max(worst, float((shifted - ref).abs().max() / ref.abs().max()))
                sums[kind]["shifted"] += cpu_ms(
                    lambda fast=fast, x=x, go=go: fast(x, go), args.repeats
                )
    for kind, parts in sums.items():
        line = ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items() if v)
        line = line.replace("shifted", "weight grad as compiled shifted products")
        print(f"{kind:9s}: {line}")
    print(f"shifted-product weight gradient vs torch's: max |diff| / max |grad| = {worst:.1e}")


if __name__ == "__main__":
    main()
