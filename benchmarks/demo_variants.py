"""Benchmark: the demo's fine-tuning run with the encoder backward or the lr varied, over seeds.

The exact setup of ``hybridize demo`` (pretrained EfficientNet-Lite0, ``has8-finetune``, the
demo's image size, batch, subset, epoch, lr and ANN lr scale; hybridize.train.demo.DEMO)
with one change: the seed (weights of the new head, subset, data order), the encoder keys of
the recipe and, for the ``*even-lr`` variants, the learning rates (twins and gates at the ANN's
lr, not 5x it); ``ann-jitter`` is the ANN from weights moved by 1e-6 (run-to-run spread);
``flat-offset4`` and ``offset4`` are ``unit-flat`` and the default with the fourier
oscillation damped 8x against its trend (points between them and a flat derivative); ``stop-grad`` is the default hybrid whose spiking paths send no gradient below their blocks. A
hybrid's record also has its top-1 with every gate at 0 (its ANN branch alone). Every
(variant, seed) appends one JSON line to ``--out``; a rerun skips what is there.

``--full-test FILE`` trains nothing: it evaluates the last checkpoint of each (variant, seed)
run found beside ``--out`` on the whole Fashion-MNIST test split (10,000 images, against the
1000 of the run's own seeded subset, whose sampling error alone is about 1.2 points at 84 %)
and appends ``top1`` records to FILE; ``--table --out FILE`` tabulates them.

    nice -n 10 .venv/bin/python benchmarks/demo_variants.py --variants ann,unit,ste,default \\
        --seeds 0,1,2 [--epochs-scale 3] [--out runs/demo_variants/results.jsonl]
    .venv/bin/python benchmarks/demo_variants.py --variants ann,unit,ste --seeds 4,5,6 \\
        --epochs-scale 3 --out runs/demo_variants/results.jsonl --full-test runs/full.jsonl
    .venv/bin/python benchmarks/demo_variants.py --table [--out ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# encoder keys written into has8-finetune's defaults; None: the ANN alone (no conversion)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "ann": None,
    "ann-jitter": None,
    "default": {},
    "ste": {"surrogate": "ste"},
    "unit": {"gain": "unit"},
    "unit-flat": {"gain": "unit", "rescale": "none"},
    # unit-flat with offset 4 instead of 0.5: under the unit gain only offset / amplitude
    # matters, so the fourier oscillation is damped 8x against the trend (offset -> inf is ste)
    "flat-offset4": {"gain": "unit", "rescale": "none", "offset": 4.0},
    # the default (order-aware planes) with the oscillation damped 8x the same way
    "offset4": {"gain": "unit", "offset": 4.0},
    "raw": {"gain": "raw"},
    "even-lr": {},
    "ste-even-lr": {"surrogate": "ste"},
    "stop-grad": {},
}
# variants whose spiking paths send no gradient to the layers below their block (each branch
# reads its input detached): what the encoder's surrogate adds to the ANN's training, by absence
STOP_GRAD = frozenset({"stop-grad"})
# variants whose weights get a tiny perturbation before training (relative size): the ANN run
# again from a start 1e-6 away, to measure how far apart two runs end from nearly one start
JITTER: dict[str, float] = {"ann-jitter": 1e-6}
# the demo's learning rates: lr on the spiking side (twins, gates), the ANN at lr x ann_lr_scale
DEMO_LR: dict[str, float] = {"lr": 5e-3, "ann_lr_scale": 0.2}
# variants that change the learning rates too: twins and gates at the ANN's lr
LR_OVERRIDES: dict[str, dict[str, float]] = {
    "even-lr": {"lr": 1e-3, "ann_lr_scale": 1.0},
    "ste-even-lr": {"lr": 1e-3, "ann_lr_scale": 1.0},
}


def recipe_dict(encoder: dict[str, Any]) -> dict:
    """The built-in ``has8-finetune`` recipe with encoder keys overridden."""
    from hybridize.recipe import load_recipe

    recipe = load_recipe("has8-finetune").to_dict()
    enc = dict(recipe["defaults"].get("encoder") or {})
    enc.update(encoder)
    recipe["defaults"]["encoder"] = enc
    return recipe


def jitter(model: Any, size: float) -> None:
    """Add ``size`` x (mean |p|) x N(0, 1) to every parameter, from a generator of its own (the
    global random stream, hence dropout and data order, stays as it is)."""
    import torch

    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.add_(noise * size * p.abs().mean())


def detach_branch_inputs(hybrid: Any) -> None:
    """Every fusion block's spiking branch reads its input detached (a forward pre-hook): the
    twins and gates still learn, but no gradient goes through the encoder to the layers below."""
    from hybridize.spiking import FusionBlock

    def detached(_module: Any, args: tuple) -> tuple:
        return (args[0].detach(), *args[1:])

    for block in hybrid.modules():
        if isinstance(block, FusionBlock):
            block.branch.register_forward_pre_hook(detached)


def gate_zero_top1(hybrid: Any, base: dict[str, Any], seed: int) -> float:
    """Top-1 of a trained hybrid with every fusion gate set to 0: its ANN branch alone, as it
    was trained inside the hybrid (the gates are set back afterwards)."""
    import torch

    import hybridize
    from hybridize.spiking import FusionBlock

    blocks = [m for m in hybrid.modules() if isinstance(m, FusionBlock)]
    saved = [b.gate.detach().clone() for b in blocks]
    with torch.no_grad():
        for b in blocks:
            b.gate.zero_()
    try:
        got = hybridize.evaluate(
            hybrid, "fashion-mnist", img_size=base["img_size"], limit=base["limit_eval"],
            batch_size=base["batch_size"], seed=seed,  # the run's own eval subset
        )  # fmt: skip
    finally:
        with torch.no_grad():
            for b, g in zip(blocks, saved, strict=True):
                b.gate.copy_(g)
    return got["eval_top1"]


def run_one(variant: str, seed: int, epochs_scale: int, out_dir: Path) -> dict[str, Any]:
    import torch

    import hybridize
    from hybridize.train.demo import DEMO, MODEL

    base = dict(DEMO)
    base["limit_train"] = base["limit_train"] * epochs_scale
    torch.manual_seed(seed)
    model = hybridize.create_model(MODEL, pretrained=True, num_classes=10)
    if variant in JITTER:
        jitter(model, JITTER[variant])
    encoder = VARIANTS[variant]
    if encoder is not None:
        size = base["img_size"]
        model = hybridize.convert(
            model, recipe_dict(encoder), example_input=torch.zeros(1, 3, size, size)
        )
        if variant in STOP_GRAD:
            detach_branch_inputs(model)
    rates = {**DEMO_LR, **LR_OVERRIDES.get(variant, {})}
    t0 = time.perf_counter()
    result = hybridize.finetune(
        model, "fashion-mnist", out=out_dir / f"{variant}-s{seed}-x{epochs_scale}",
        tag=variant, seed=seed, progress=False, **rates, **base,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    last = result.history[-1]
    gates = last.get("gates") or {}
    ann_branch = None if encoder is None else gate_zero_top1(result.model, base, seed)
    return {
        "variant": variant,
        "seed": seed,
        "epochs_scale": epochs_scale,
        "encoder": encoder,
        **rates,
        "top1": last["eval_top1"],
        "eval_loss": last["eval_loss"],
        "train_loss": last.get("train_loss"),
        "gate_mean": sum(gates.values()) / len(gates) if gates else None,
        "top1_gates_0": ann_branch,
        "firing_rate": last.get("firing_rate"),
        "stopped": result.stopped,
        "time_s": elapsed,
        "torch": torch.__version__,
    }


def run_dir(out_dir: Path, variant: str, seed: int, epochs_scale: int) -> Path:
    return out_dir / f"{variant}-s{seed}-x{epochs_scale}"


def full_test_one(
    variant: str, seed: int, epochs_scale: int, out_dir: Path
) -> dict[str, Any] | None:
    """Top-1 of a finished run's last checkpoint on the whole test split (None: no such run)."""
    import hybridize
    from hybridize.train.demo import DEMO

    checkpoint = run_dir(out_dir, variant, seed, epochs_scale) / "last.safetensors"
    if not checkpoint.is_file():
        return None
    got = hybridize.evaluate(
        checkpoint, "fashion-mnist", img_size=DEMO["img_size"], batch_size=DEMO["batch_size"]
    )
    return {
        "variant": variant,
        "seed": seed,
        "epochs_scale": epochs_scale,
        "top1": got["eval_top1"],
        "eval_loss": got["eval_loss"],
        "eval_samples": got["eval_samples"],
        "checkpoint": str(checkpoint),
    }


def read(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(records: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, int], list[float]] = {}
    for r in records:
        groups.setdefault((r["variant"], r["epochs_scale"]), []).append(100 * r["top1"])
    lines = [
        "| variant | budget | seeds | top-1 % (mean ± sd) | per seed |",
        "|---|---|---|---|---|",
    ]
    for (variant, scale), vals in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        sd = f" ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else ""
        per = ", ".join(f"{v:.2f}" for v in vals)
        lines.append(
            f"| {variant} | {scale}x | {len(vals)} | {statistics.mean(vals):.2f}{sd} | {per} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="ann,unit,ste,default")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs-scale", type=int, default=1, help="training images x this")
    p.add_argument("--out", default="runs/demo_variants/results.jsonl")
    p.add_argument("--table", action="store_true", help="only print the table of --out")
    p.add_argument(
        "--full-test",
        type=Path,
        default=None,
        metavar="FILE",
        help="evaluate the finished runs beside --out on the whole test split, into FILE",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.table:
        print(table(read(out)))
        return 0
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    results = out if args.full_test is None else args.full_test
    results.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["variant"], r["seed"], r["epochs_scale"]) for r in read(results)}
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variants.split(","):
            if (variant, seed, args.epochs_scale) in done:
                continue
            job = run_one if args.full_test is None else full_test_one
            rec: dict[str, Any] | None = job(variant, seed, args.epochs_scale, out.parent)
            if rec is None:
                print(f"no finished run of {variant} at seed {seed}; skipped", file=sys.stderr)
                continue
            with results.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)
    print(table(read(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
