"""Train-step cost of a model and its hybrids, side by side, and accuracy after a fixed budget.

    python benchmarks/finetune.py --model resnet18 --img-size 64 --batch-size 32
    python benchmarks/finetune.py --accuracy --model tf_efficientnet_lite0 --pretrained \
        --img-size 32 --budget-steps 30

Part 1 (always): for the ANN and its ``has8`` / ``has8-finetune`` hybrids, the median train-step
time (forward + backward + AdamW step), images/s, the bytes autograd saves for backward (a
device-independent activation-memory figure) and, on CUDA, the peak allocated memory; each as a
ratio to the ANN, beside the (1 + T) compute floor of parallel twins (METHOD.md 8).
Part 2 (``--accuracy``): fine-tune the ANN and the has8-finetune hybrid for the same number of
steps on a Fashion-MNIST subset and evaluate both on the same held-out images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import hybridize


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward in one forward pass."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).float().sum()
    return total


def step_cost(model, x, y, steps: int, warmup: int, amp: str) -> dict:
    """Median seconds per train step and peak CUDA memory (None on the CPU)."""
    dev = x.device
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    ctx = (
        torch.autocast(dev.type, dtype=torch.bfloat16)
        if amp == "bf16"
        else torch.autocast(dev.type, enabled=False)
    )
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        with ctx:
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    with ctx:
        saved = saved_bytes(model, x)
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
    return {"step_s": statistics.median(times), "saved_bytes": saved, "peak_bytes": peak}


def build(name: str, recipe: str | None, size: int, pretrained: bool, classes: int):
    torch.manual_seed(0)
    model = hybridize.create_model(name, pretrained=pretrained, num_classes=classes)
    if recipe is not None:
        model = hybridize.convert(model, recipe, example_input=torch.zeros(1, 3, size, size))
    return model


def time_steps(model) -> int | None:
    from hybridize.spiking import BitPlaneEncoder

    for m in model.modules():
        if isinstance(m, BitPlaneEncoder):
            return m.time_steps
    return None


def throughput(args, dev: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=g).to(dev)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(dev)
    rows = []
    for recipe in [None, *args.recipes]:
        model = build(args.model, recipe, args.img_size, args.pretrained, 10).to(dev)
        cost = step_cost(model, x, y, args.steps, args.warmup, args.amp)
        rows.append(
            {
                "model": args.model if recipe is None else f"{args.model}+{recipe}",
                "params": sum(p.numel() for p in model.parameters()),
                "T": time_steps(model),
                **cost,
                "images_per_s": args.batch_size / cost["step_s"],
            }
        )
        del model
    return rows


def print_throughput(rows: list[dict], args) -> None:
    from rich.console import Console
    from rich.table import Table

    ann = rows[0]
    t = Table(
        title=f"train step: {args.model}, {args.img_size} px, batch {args.batch_size}, amp {args.amp}"
    )
    for col in (
        "model",
        "params",
        "step s",
        "img/s",
        "time x ANN",
        "floor 1+T",
        "saved MB",
        "mem x ANN",
        "peak MB",
    ):
        t.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        floor = "-" if r["T"] is None else f"{1 + r['T']}"
        peak = "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**20:.0f}"
        t.add_row(
            r["model"],
            f"{r['params'] / 1e6:.2f} M",
            f"{r['step_s']:.3f}",
            f"{r['images_per_s']:.1f}",
            f"{r['step_s'] / ann['step_s']:.2f}",
            floor,
            f"{r['saved_bytes'] / 2**20:.1f}",
            f"{r['saved_bytes'] / ann['saved_bytes']:.2f}",
            peak,
        )
    Console(width=160).print(t)


def accuracy(args, dev: torch.device) -> dict:
    results = {}
    for tag, recipe in (("ann", None), ("hybrid", "has8-finetune")):
        model = build(args.model, recipe, args.img_size, args.pretrained, 10)
        t0 = time.perf_counter()
        r = hybridize.finetune(
            model,
            "fashion-mnist",
            data_root=args.data_root,
            epochs=1,
            batch_size=args.batch_size,
            lr=args.lr,
            ann_lr_scale=args.ann_lr_scale,
            img_size=args.img_size,
            limit_train_batches=args.budget_steps,
            limit_eval=args.eval_samples,
            amp=args.amp,
            device=str(dev),
            progress=False,
            tag=tag,
        )
        last = r.history[-1]
        results[tag] = {
            "top1": last["eval_top1"],
            "eval_loss": last["eval_loss"],
            "train_images": last["train_samples"],
            "train_images_per_s": last["images_per_s"],
            "wall_s": time.perf_counter() - t0,
            "gate_mean": (sum(last["gates"].values()) / len(last["gates"]))
            if last["gates"]
            else None,
            "firing_rate": last["firing_rate"],
        }
        print(f"{tag}: {json.dumps(results[tag])}", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--recipes", nargs="*", default=["has8", "has8-finetune"])
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", choices=["off", "bf16"], default="off")
    p.add_argument("--device", default="auto")
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--accuracy", action="store_true", help="also the fixed-budget accuracy run")
    p.add_argument("--no-throughput", action="store_true")
    p.add_argument("--budget-steps", type=int, default=30)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--ann-lr-scale", type=float, default=0.2)
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, help="write all figures to this file")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    figures: dict = {"args": vars(args), "device": str(dev)}
    if not args.no_throughput:
        figures["throughput"] = throughput(args, dev)
        print_throughput(figures["throughput"], args)
    if args.accuracy:
        figures["accuracy"] = accuracy(args, dev)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
