"""Activation memory of a model and its hybrid: the bytes autograd saves in one train forward.

Each saved tensor is counted once per storage (through saved_tensors_hooks, outermost, so the
spiking branch's packed spike saves are seen as stored), for the ANN and for its hybrid under
each kernel backend (``eager``: the plain ops, float32 spikes; ``fused``: the kernels, spikes and
planes saved as bits, BatchNorm -> LIF keeping no membrane). Parameters that layers save (conv
weights) count too, as they do for the ANN. ``--by-op`` also splits each count by where the
storage was first saved: the innermost module running (``ann Conv2d``, ``twin BatchNorm2d``,
``twin LIF``, ``encoder``, ``decoder``, ``fusion`` for the gate and add), parameters apart.

    .venv/bin/python benchmarks/memory.py --model resnet18 --recipe has8 --img-size 64 \
        --batch-size 8 [--by-op]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
from torch import nn

import hybridize
from hybridize.spiking import FusionBlock, SpikingBranch
from hybridize.spiking.kernels import kernel_backend_override


def _where(stack: list[nn.Module]) -> str:
    """The part of a hybrid that ``stack`` (the modules running, outermost first) is in."""
    branch = next((m for m in reversed(stack) if isinstance(m, SpikingBranch)), None)
    inner = stack[-1] if stack else None
    if branch is not None:
        if any(m is branch.encoder for m in stack):
            return "encoder"
        if any(m is branch.decoder for m in stack):
            return "decoder"
        return "twin " + type(inner).__name__
    if isinstance(inner, FusionBlock):
        return "fusion"
    return "ann " + type(inner).__name__


def saved_bytes(model: nn.Module, x: torch.Tensor) -> tuple[int, Counter, Counter]:
    """(total bytes, bytes per dtype, bytes per part of the model) autograd saves in one train
    forward, once per storage."""
    storages: dict[int, tuple[int, str, str]] = {}
    stack: list[nn.Module] = []
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def enter(m: nn.Module, args: object) -> None:
        stack.append(m)

    def leave(m: nn.Module, args: object, out: object) -> None:
        stack.pop()

    hooks = [h for m in model.modules() for h in (
        m.register_forward_pre_hook(enter), m.register_forward_hook(leave)
    )]  # fmt: skip

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in storages:
            part = "parameters" if st.data_ptr() in params else _where(stack)
            storages[st.data_ptr()] = (st.nbytes(), str(t.dtype).replace("torch.", ""), part)
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x).float().sum()
    finally:
        for h in hooks:
            h.remove()
    by_dtype: Counter = Counter()
    by_part: Counter = Counter()
    for nbytes, dtype, part in storages.values():
        by_dtype[dtype] += nbytes
        by_part[f"{part} ({dtype})"] += nbytes
    return sum(by_dtype.values()), by_dtype, by_part


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--recipe", default="has8")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backends", default="eager,fused", help="comma-separated kernel backends")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--by-op", action="store_true", help="split the counts by part of the model")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ann = hybridize.create_model(args.model, num_classes=10).train()
    example = torch.zeros(1, 3, args.img_size, args.img_size)
    hybrid = hybridize.convert(
        hybridize.create_model(args.model, num_classes=10), args.recipe, example_input=example
    ).train()
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    ann_bytes, ann_types, ann_parts = saved_bytes(ann, x)
    rows = {"ann": {"bytes": ann_bytes, "by_dtype": dict(ann_types), "by_part": dict(ann_parts)}}
    for backend in args.backends.split(","):
        with kernel_backend_override(backend):
            total, types, parts = saved_bytes(hybrid, x)
        rows[f"{args.recipe} ({backend})"] = {
            "bytes": total,
            "by_dtype": dict(types),
            "by_part": dict(parts),
        }
    print(f"{args.model}, {args.img_size} px, batch {args.batch_size}: saved for backward")
    for name, r in rows.items():
        parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(r["by_dtype"].items()))
        print(
            f"{name:20s} {r['bytes'] / 2**20:8.1f} MiB  x{r['bytes'] / ann_bytes:.2f} ANN  "
            f"({parts} MiB)"
        )
        if args.by_op:
            for part, nbytes in sorted(r["by_part"].items(), key=lambda kv: -kv[1]):
                if nbytes >= 2**16:
                    print(f"    {part:32s} {nbytes / 2**20:8.1f} MiB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
