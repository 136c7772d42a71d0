"""Benchmark: gradient flow through the fusion blocks of a hybrid, per encoder backward.

For each model and encoder variant: convert with a recipe (default ``has8``) whose encoder keys
are overridden, set every gate to 1, and run one train-mode backward of cross entropy on a
fixed batch (2 images, 64 px, seed 0, no pretrained weights), the setup of
``benchmarks/coverage.py``'s backward stage. Reported:

- the largest |parameter gradient| of the hybrid and of its ANN (same weights, same batch) and
  their ratio; whether every gradient is finite;
- per fusion block y = A(x) + g * B(x): ||dL/dy|| and the gain of each path, the input-side
  gradient norm over the output-side one: ||J_A^T G|| / ||G|| for the ANN path and
  ||g J_B^T G|| / ||G|| for the spiking path (G = dL/dy from the full backward; each path
  recomputed alone from the block's recorded input and side inputs; for a block that returns a
  tuple, y is the item the spiking path adds to).

    nice -n 10 .venv/bin/python benchmarks/grad_profile.py --models resnet18,mixnet_s \\
        --variants raw,unit,ste [--recipe has8] [--blocks] [--out grad_profile.jsonl]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "raw": {"gain": "raw"},
    "unit": {"gain": "unit"},
    "unit-flat": {"gain": "unit", "rescale": "none"},
    "ste": {"surrogate": "ste"},
}


def _coverage() -> Any:
    """benchmarks/coverage.py as a module (its input picking and head fix are reused)."""
    path = Path(__file__).with_name("coverage.py")
    spec = importlib.util.spec_from_file_location("hybridize_bench_coverage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_dict(recipe: str, encoder: dict[str, Any]) -> dict:
    """A built-in recipe with encoder keys overridden."""
    from hybridize.recipe import load_recipe

    data = load_recipe(recipe).to_dict()
    enc = dict(data["defaults"].get("encoder") or {})
    enc.update(encoder)
    data["defaults"]["encoder"] = enc
    return data


def _max_abs_grad(model: Any) -> float:
    values = [p.grad.abs().max().item() for p in model.parameters() if p.grad is not None]
    return max(values) if values else 0.0


def profile(
    name: str, variant: str, recipe: str = "has8", gains: bool = True, gate: float = 1.0
) -> dict[str, Any]:
    """One backward with every gate at ``gate`` of ``name`` converted with ``recipe`` +
    VARIANTS[variant]; ``gains=False`` skips the per-block path gains."""
    import torch

    import hybridize
    from hybridize.spiking import FusionBlock

    cov = _coverage()
    torch.manual_seed(0)
    model = hybridize.create_model(name, num_classes=cov.NUM_CLASSES)
    cov._reinit_zero_heads(model)
    model.eval()
    x, _ = cov._pick_input(model)
    target = torch.arange(x.shape[0]) % cov.NUM_CLASSES

    model.train()
    torch.nn.functional.cross_entropy(model(x), target).backward()
    ann_max = _max_abs_grad(model)
    model.zero_grad(set_to_none=True)
    model.eval()

    hybrid = hybridize.convert(model, recipe_dict(recipe, VARIANTS[variant]), example_input=x)
    blocks = [(n, m) for n, m in hybrid.named_modules() if isinstance(m, FusionBlock)]
    calls: dict[str, tuple[Any, tuple, dict]] = {}  # the input, side inputs, keyword side inputs
    grads: dict[str, Any] = {}
    order: list[str] = []

    def detached(v: Any) -> Any:
        return v.detach().clone() if isinstance(v, torch.Tensor) else v

    def watch(block_name: str) -> Any:
        def hook(m: Any, args: Any, kwargs: Any, out: Any) -> None:
            index = m.branch.out_index
            y = out if index is None else out[index]  # the item the spiking path adds to
            order.append(block_name)
            side = tuple(detached(a) for a in args[1:])
            calls[block_name] = (
                detached(args[0]),
                side,
                {k: detached(v) for k, v in kwargs.items()},
            )
            y.register_hook(lambda g: grads.__setitem__(block_name, g.detach().clone()))

        return hook

    handles = []
    for block_name, m in blocks:
        with torch.no_grad():
            m.gate.fill_(gate)
        if gains:
            handles.append(m.register_forward_hook(watch(block_name), with_kwargs=True))
    hybrid.train()
    loss = torch.nn.functional.cross_entropy(hybrid(x), target)
    loss.backward()
    for h in handles:
        h.remove()
    hyb_max = _max_abs_grad(hybrid)
    finite = all(p.grad.isfinite().all().item() for p in hybrid.parameters() if p.grad is not None)

    rows = []
    by_name = dict(blocks)
    for block_name in order if gains else []:
        g_out = grads.get(block_name)
        if g_out is None:
            continue
        block = by_name[block_name]
        g_norm = g_out.double().norm().item()
        row = {"block": block_name, "grad_out": g_norm}
        x_in, side, side_kw = calls[block_name]
        for path, fn in (("ann", block.ann), ("spike", block.branch)):
            xi = x_in.clone().requires_grad_(True)
            y = fn(xi, *side, **side_kw)
            if path == "ann" and block.branch.out_index is not None:
                y = y[block.branch.out_index]
            if path == "spike":
                y = block._broadcast_gate(y) * y
            (gx,) = torch.autograd.grad(y, xi, g_out.to(y.dtype), allow_unused=True)
            num = 0.0 if gx is None else gx.double().norm().item()
            row[f"{path}_gain"] = num / g_norm if g_norm > 0 and math.isfinite(g_norm) else math.nan
        rows.append(row)
    return {
        "model": name,
        "recipe": recipe,
        "variant": variant,
        "gate": gate,
        "encoder": VARIANTS[variant],
        "input": list(x.shape),
        "loss": loss.item(),
        "finite": bool(finite),
        "max_grad": hyb_max,
        "ann_max_grad": ann_max,
        "ratio": hyb_max / ann_max if ann_max > 0 else math.inf,
        "blocks": rows,
        "torch": torch.__version__,
    }


def _log10(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{math.log10(v):.1f}" if v > 0 else "-inf"


def _gmean(values: list[float]) -> float:
    ok = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(statistics.fmean(math.log(v) for v in ok)) if ok else math.nan


def summary_table(records: list[dict[str, Any]]) -> str:
    lines = [
        "| model | recipe | gate | encoder | blocks | finite | log10 max grad (hybrid / ANN) "
        "| ratio | spike gain per block (geo. mean / max) | ANN gain per block (geo. mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        spike = [b["spike_gain"] for b in r["blocks"]]
        ann = [b["ann_gain"] for b in r["blocks"]]
        gains = f"{_gmean(spike):.3g} / {max(spike):.3g} | {_gmean(ann):.3g}" if spike else "- | -"
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r.get('gate', 1.0):g} | {r['variant']} | "
            f"{len(r['blocks']) or '-'} | {'yes' if r['finite'] else 'NO'} | "
            f"{_log10(r['max_grad'])} / {_log10(r['ann_max_grad'])} | {r['ratio']:.3g} | {gains} |"
        )
    return "\n".join(lines)


def blocks_table(record: dict[str, Any]) -> str:
    lines = [
        f"{record['model']} ({record['recipe']}, gate {record.get('gate', 1.0):g}, "
        f"{record['variant']})",
        f"{'block':40s} {'log10 |dL/dy|':>14s} {'ANN gain':>10s} {'spike gain':>11s}",
    ]
    for b in record["blocks"]:
        lines.append(
            f"{b['block']:40s} {_log10(b['grad_out']):>14s} {b['ann_gain']:10.3g} "
            f"{b['spike_gain']:11.3g}"
        )
    return "\n".join(lines)


def _recorded(out: str | None, recipe: str, gate: float) -> set[tuple[str, str]]:
    """(model, variant) pairs ``out`` already holds for this recipe and gate."""
    if not out or not Path(out).is_file():
        return set()
    records = [json.loads(line) for line in Path(out).read_text().splitlines() if line.strip()]
    return {
        (r["model"], r["variant"]) for r in records if r["recipe"] == recipe and r["gate"] == gate
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18")
    p.add_argument("--variants", default="raw,unit")
    p.add_argument("--recipe", default="has8")
    p.add_argument("--gate", type=float, default=1.0, help="value every gate is set to")
    p.add_argument("--blocks", action="store_true", help="also print the per-block table")
    p.add_argument(
        "--no-gains", action="store_true", help="skip the per-block path gains (max grads only)"
    )
    p.add_argument(
        "--out",
        default=None,
        help="append one JSON line per (model, variant); a rerun skips what is there",
    )
    p.add_argument("--table", metavar="FILE", default=None, help="only print FILE's summary")
    args = p.parse_args(argv)
    if args.table:
        lines = Path(args.table).read_text().splitlines()
        print(summary_table([json.loads(line) for line in lines if line.strip()]))
        return 0
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}", file=sys.stderr)
        return 2
    records = []
    done = _recorded(args.out, args.recipe, args.gate)
    for name in args.models.split(","):
        for variant in args.variants.split(","):
            if (name, variant) in done:  # a rerun on the same --out resumes
                continue
            rec = profile(name, variant, args.recipe, not args.no_gains, args.gate)
            records.append(rec)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            if args.blocks:
                print(blocks_table(rec), flush=True)
            print(summary_table([rec]).splitlines()[-1], flush=True)
    print(summary_table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
