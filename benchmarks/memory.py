"""Activation memory of a model and its hybrid: the bytes autograd saves in one train forward.

Each saved tensor is counted once per storage (through saved_tensors_hooks, outermost, so the
spiking branch's one-byte spike saves are seen as stored), for the ANN and for its hybrid under
each kernel backend (``eager``: today's ops, float32 spikes; ``fused``: the kernels and uint8
spike saves). Parameters that layers save (conv weights) count too, as they do for the ANN.

    .venv/bin/python benchmarks/memory.py --model resnet18 --recipe has8 --img-size 64 \
        --batch-size 8
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch

import hybridize
from hybridize.spiking.kernels import kernel_backend_override


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, Counter]:
    """(total bytes, bytes per dtype) autograd saves in one train forward, once per storage."""
    storages: dict[int, tuple[int, str]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        storages[st.data_ptr()] = (st.nbytes(), str(t.dtype).replace("torch.", ""))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).float().sum()
    by_dtype: Counter = Counter()
    for nbytes, dtype in storages.values():
        by_dtype[dtype] += nbytes
    return sum(by_dtype.values()), by_dtype


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--recipe", default="has8")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--backends", default="eager,fused", help="comma-separated kernel backends")
    p.add_argument("--threads", type=int, default=None)
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
    ann_bytes, ann_types = saved_bytes(ann, x)
    rows = {"ann": {"bytes": ann_bytes, "by_dtype": dict(ann_types)}}
    for backend in args.backends.split(","):
        with kernel_backend_override(backend):
            total, types = saved_bytes(hybrid, x)
        rows[f"{args.recipe} ({backend})"] = {"bytes": total, "by_dtype": dict(types)}
    print(f"{args.model}, {args.img_size} px, batch {args.batch_size}: saved for backward")
    for name, r in rows.items():
        parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sorted(r["by_dtype"].items()))
        print(
            f"{name:20s} {r['bytes'] / 2**20:8.1f} MiB  x{r['bytes'] / ann_bytes:.2f} ANN  "
            f"({parts} MiB)"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
