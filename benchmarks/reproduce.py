"""Reproduction and ablation study on Fashion-MNIST (issue 6; results in docs/results.md).

    nice -n 5 python benchmarks/reproduce.py --skip-expensive   # CPU budget, 45 runs
    nice -n 5 python benchmarks/reproduce.py --step-costs       # train-step times, round-robin
    python benchmarks/reproduce.py --table                      # the table of a (partial) run
    python benchmarks/reproduce.py --full --device cuda         # whole data set, 10 epochs
    python benchmarks/reproduce.py --only has8_resnet,ann_resnet --seeds 0

Every row is trained with the same data subset, seed(s), epochs, batch size and optimizer
(the paper's small-data recipe: Adam, lr 1e-3, weight decay 1e-3, no schedule, inputs in [0, 1],
flip only; METHOD.md 7) and evaluated on the same held-out images. Rows: the HAS-8 ANN
baselines, HAS-8 hybrids (`has8-released` compat and the cleaned-up `has8` defaults), a pure
spiking variant (mode `replace`), `has8-finetune` on the pretrained EfficientNet-Lite0 beside its
ANN, and encoder ablations applied one at a time to the `has8` ResNet-b32 hybrid.

On a CPU the expensive rows (the VGG-b16 hybrids) get one seed; ``--skip-expensive`` leaves
them out.
Each finished (row, seed) is appended to ``OUT/results.jsonl`` at once (one JSON object per
line); a rerun skips what is there, so an interrupted run resumes and a partial run is usable.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Budget:
    """What every row of one run gets (expensive rows may scale the image counts down)."""

    limit_train: int | None
    limit_eval: int | None
    epochs: int
    batch_size: int
    img_size: int
    seeds: tuple[int, ...]


CPU_BUDGET = Budget(limit_train=2000, limit_eval=1000, epochs=1, batch_size=64, img_size=32,
                    seeds=(0, 1, 2))  # fmt: skip
FULL_BUDGET = Budget(limit_train=None, limit_eval=None, epochs=10, batch_size=64, img_size=32,
                     seeds=(0, 1, 2))  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of the table: a model build and how much of the budget it gets."""

    key: str
    label: str
    group: str  # "main" or "ablation"
    model: str  # has8_* name or "effnet"
    hybrid: bool
    recipe: str | dict | None = None
    baseline: str | None = None  # key of the ANN row its time is relative to
    # Rows whose step costs tens of seconds on a CPU: 1 seed and scaled image counts there.
    expensive: bool = False
    cpu_scale: float = 1.0
    finetune: dict = field(default_factory=dict)  # extra finetune options


def _has8_dict(defaults: dict | None = None, **encoder: Any) -> dict:
    """The built-in ``has8`` recipe with encoder keys (and other default keys) overridden
    (targets are set by create)."""
    from hybridize.recipe import load_recipe

    recipe = load_recipe("has8").to_dict()
    enc = dict(recipe["defaults"].get("encoder") or {})
    enc.update(encoder)
    recipe["defaults"]["encoder"] = enc
    recipe["defaults"].update(defaults or {})
    changed = {**encoder, **(defaults or {})}
    recipe["name"] = "has8-" + "-".join(f"{k}={v}" for k, v in changed.items())
    return recipe


def _replace_dict() -> dict:
    from hybridize.recipe import load_recipe

    recipe = load_recipe("has8").to_dict()
    recipe["defaults"]["mode"] = "replace"
    recipe["name"] = "has8-replace"
    return recipe


def _replace_blocks_dict(**defaults: Any) -> dict:
    """The built-in ``replace-blocks`` recipe's defaults with fresh twins (training from scratch),
    other default keys overridden; the HAS-8 regions (stem and blocks) are set by create."""
    from hybridize.recipe import load_recipe

    recipe = load_recipe("replace-blocks").to_dict()
    recipe["defaults"].update({"twin_init": "fresh", **defaults})
    recipe["name"] = "replace-blocks-fresh" + "".join(f"-{k}={v}" for k, v in defaults.items())
    return recipe


# EfficientNet-Lite0 is pretrained with mean/std inputs: no paper inputs, the demo's lrs.
EFFNET_OPTS = {"paper_inputs": False, "lr": 5e-3, "ann_lr_scale": 0.2}


def rows() -> list[Row]:
    """The table, in run order within each seed (cheap core rows first)."""
    r = "has8_resnet_b32"
    main = [
        Row("ann_resnet", "ResNet-b32 ANN", "main", r, False),
        Row("ann_vgg", "VGG-b16 ANN", "main", "has8_vgg_b16", False),
        Row("has8_resnet_released", "HAS-8 ResNet-b32, has8-released", "main", r, True,
            "has8-released", "ann_resnet"),
        Row("has8_resnet", "HAS-8 ResNet-b32, has8 (cleaned-up)", "main", r, True, "has8",
            "ann_resnet"),
        Row("snn_resnet", "ResNet-b32 pure spiking blocks (mode replace)", "main", r, True,
            _replace_dict(), "ann_resnet"),
        Row("snn_resnet_rb", "ResNet-b32 pure spiking blocks, replace-blocks (fresh twins)",
            "main", r, True, _replace_blocks_dict(), "ann_resnet"),
    ]  # fmt: skip
    ablations = [
        ("abl_offset0", "fourier, offset 0 (true derivative)", {"offset": 0.0}),
        ("abl_sigsine", "sigsine (alpha -10)", {"surrogate": "sigsine"}),
        ("abl_tanhsine", "tanhsine (alpha -10)", {"surrogate": "tanhsine"}),
        ("abl_ste", "ste (straight-through)", {"surrogate": "ste"}),
        ("abl_gain_unit", "gain unit (calibrated surrogate)", {"gain": "unit"}),
        ("abl_rescale_none", "rescale none", {"rescale": "none"}),
        ("abl_order_lsb", "order lsb (encoder and decoder)", {"order": "lsb"}),
        ("abl_quant_none", "quantize none", {"quantize": "none"}),
        ("abl_quant_floor", "quantize floor", {"quantize": "floor"}),
        ("abl_norm_auto", "normalize auto (batch min-max)", {"normalize": "auto"}),
        ("abl_norm_minmax", "normalize minmax (per sample)", {"normalize": "minmax"}),
    ]
    abl = [
        Row(k, f"has8 ResNet-b32, {label}", "ablation", r, True, _has8_dict(**enc), "ann_resnet")
        for k, label, enc in ablations
    ]
    # Issue 9: the calibrated gain combined with what the pure spiking blocks needed.
    unit = {"gain": "unit"}
    abl += [
        Row("abl_unit_bnm", "has8 ResNet-b32, gain unit + twin BN momentum 0.5", "ablation", r,
            True, _has8_dict({"bn_momentum": 0.5}, **unit), "ann_resnet"),
        Row("abl_unit_bnm_th", "has8 ResNet-b32, gain unit + BN momentum 0.5 + v_threshold 0.5",
            "ablation", r, True,
            _has8_dict({"bn_momentum": 0.5, "neuron": {"v_threshold": 0.5}}, **unit),
            "ann_resnet"),
    ]  # fmt: skip
    # EfficientNet-Lite0 at 32 px costs ~3 s per hybrid step of batch 64 on an idle 2-core CPU
    # (the demo measures 7.4x its ANN), so it runs the full CPU budget with every seed.
    effnet = [
        Row("ann_effnet", "EfficientNet-Lite0 ANN (pretrained)", "main", "effnet", False,
            finetune=EFFNET_OPTS),
        Row("ft_effnet", "EfficientNet-Lite0, has8-finetune (pretrained)", "main", "effnet",
            True, "has8-finetune", "ann_effnet", finetune=EFFNET_OPTS),
    ]  # fmt: skip
    expensive = [
        Row("has8_vgg_released", "HAS-8 VGG-b16, has8-released", "main", "has8_vgg_b16", True,
            "has8-released", "ann_vgg", expensive=True),
        Row("has8_vgg", "HAS-8 VGG-b16, has8 (cleaned-up)", "main", "has8_vgg_b16", True,
            "has8", "ann_vgg", expensive=True),
    ]  # fmt: skip
    return main + effnet + abl + expensive


def build(row: Row, in_chans: int) -> torch.nn.Module:
    """A fresh model for ``row`` (weights drawn from the current torch seed)."""
    import hybridize
    from hybridize.models import create

    if row.model == "effnet":
        ann = hybridize.create_model("tf_efficientnet_lite0", pretrained=True, num_classes=10)
        if not row.hybrid:
            return ann
        return hybridize.convert(ann, row.recipe, example_input=torch.zeros(1, 3, 32, 32))
    if not row.hybrid:
        return create(row.model, num_classes=10, in_chans=in_chans, hybrid=False)
    return create(row.model, num_classes=10, in_chans=in_chans, recipe=row.recipe)


def eval_images(n: int, size: int, chans: int, mean_std: tuple | None) -> torch.Tensor:
    """The first n Fashion-MNIST test images, resized, in [0, 1] (or mean/std normalised)."""
    from hybridize.data import read_idx

    x = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[:n].float().div(255.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").clamp(0, 1)
    x = x.repeat(1, chans, 1, 1)
    if mean_std is not None:
        mean, std = (torch.tensor(v).reshape(1, -1, 1, 1) for v in mean_std)
        x = (x - mean) / std
    return x


def step_cpu_seconds(
    model: torch.nn.Module, budget: Budget, chans: int, device: str, steps: int = 3
) -> float:
    """Median process CPU seconds of one train step (batch of the budget, Adam), ``steps``
    after one warm-up: a model-cost ratio that other processes on a shared CPU do not distort."""
    model = copy.deepcopy(model).to(device).train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(budget.batch_size, chans, budget.img_size, budget.img_size, generator=gen)
    y = torch.randint(0, 10, (budget.batch_size,), generator=gen)
    x, y = x.to(device), y.to(device)
    times = []
    for i in range(steps + 1):
        t0 = time.process_time() if device == "cpu" else time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        if i:
            times.append((time.process_time() if device == "cpu" else time.perf_counter()) - t0)
    return statistics.median(times)


def step_costs(keys: list[str], budget: Budget, device: str, rounds: int = 5) -> dict:
    """Median wall seconds per train step for each row, measured round-robin (one step of
    every model per round) so that load from other processes spreads over all rows alike."""
    chosen = [r for r in rows() if r.key in keys]
    models, opts, times = {}, {}, {r.key: [] for r in chosen}
    for r in chosen:
        torch.manual_seed(0)
        chans = 3 if r.model == "effnet" else 1
        models[r.key] = (build(r, chans).to(device).train(), chans)
        params = [p for p in models[r.key][0].parameters() if p.requires_grad]
        opts[r.key] = torch.optim.Adam(params, lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (budget.batch_size,), generator=gen).to(device)
    for i in range(rounds + 1):
        for r in chosen:
            model, chans = models[r.key]
            x = torch.rand(budget.batch_size, chans, budget.img_size, budget.img_size,
                           generator=gen).to(device)  # fmt: skip
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opts[r.key].zero_grad()
            loss.backward()
            opts[r.key].step()
            if device != "cpu":
                torch.cuda.synchronize()
            if i:  # round 0 is the warm-up
                times[r.key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run_one(row: Row, seed: int, budget: Budget, device: str, workers: int) -> dict:
    """Train ``row`` for the budget with ``seed``; accuracy, time, firing rate and energy."""
    import hybridize
    from hybridize.metrics import inspect

    scale = row.cpu_scale if (row.expensive and budget.limit_train is not None) else 1.0
    limit_train = None if budget.limit_train is None else int(budget.limit_train * scale)
    limit_eval = None if budget.limit_eval is None else int(budget.limit_eval * scale)
    chans = 3 if row.model == "effnet" else 1
    torch.manual_seed(seed)
    model = build(row, chans)
    steps = 1 if row.expensive else 3
    first = seed == min(budget.seeds)
    step_s = step_cpu_seconds(model, budget, chans, device, steps) if first else None
    torch.manual_seed(seed)
    opts = {"preset": "has8-small", "batch_size": budget.batch_size, **row.finetune}
    out = Path(tempfile.mkdtemp(prefix="reproduce-"))
    try:
        res = hybridize.finetune(
            model, data="fashion-mnist", epochs=budget.epochs, limit_train=limit_train,
            limit_eval=limit_eval, img_size=budget.img_size, seed=seed, workers=workers,
            device=device, out=out, progress=False, **opts,
        )  # fmt: skip
    finally:
        shutil.rmtree(out, ignore_errors=True)
    hist = res.history
    mean_std = None
    if row.model == "effnet":
        cfg = res.model.pretrained_cfg if hasattr(res.model, "pretrained_cfg") else None
        cfg = cfg or {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        mean_std = (cfg["mean"], cfg["std"])
    x = eval_images(32, budget.img_size, chans, mean_std).to(device)
    report = inspect(res.model.to(device), x, batch_size=16)
    return {
        "row": row.key,
        "seed": seed,
        "top1": hist[-1]["eval_top1"],
        "best_top1": res.best_top1,
        "train_time_s": statistics.fmean(h["train_time_s"] for h in hist),
        "step_cpu_s": step_s,
        "train_samples": hist[-1]["train_samples"],
        "eval_samples": hist[-1]["eval_samples"],
        "firing_rate": hist[-1].get("firing_rate"),
        "energy_ann_uj": report.energy_ann_pj / 1e6,
        "energy_hybrid_uj": report.energy_hybrid_pj / 1e6,
        "twin_dense_mmacs": sum(r.twin_dense_macs for r in report.regions) / 1e6,
        "params_m": sum(p.numel() for p in res.model.parameters()) / 1e6,
        "limit_train": limit_train,
        "limit_eval": limit_eval,
        "threads": torch.get_num_threads() if device == "cpu" else None,
    }


def append_jsonl(path: Path, record: dict) -> None:
    """Append one line and fsync (a crash loses at most the row being trained)."""
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn last line from a killed run
    return out


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "-"
    m = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100 * statistics.stdev(values):.1f}"


def table(records: list[dict], budget_note: str = "", costs: dict | None = None) -> str:
    """Markdown table of the finished rows (mean ± sample std over seeds). ``costs`` (from
    ``--step-costs``) replaces the per-run step CPU times in the step column when given."""
    by_row: dict[str, list[dict]] = {}
    for rec in records:
        by_row.setdefault(rec["row"], []).append(rec)
    step_of = {
        k: statistics.fmean(r["step_cpu_s"] for r in v if r.get("step_cpu_s"))
        for k, v in by_row.items()
        if any(r.get("step_cpu_s") for r in v)
    }
    if costs:
        step_of = dict(costs)
    lines = [
        "| row | seeds | top-1 % | train step time vs ANN | firing rate % | energy µJ/img "
        "(ANN → hybrid) | train/eval imgs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows():
        recs = by_row.get(row.key)
        if not recs:
            continue
        base = row.baseline or row.key
        both = row.key in step_of and base in step_of
        step = f"{step_of[row.key] / step_of[base]:.1f}x" if both else "-"
        rates = [r["firing_rate"] for r in recs if r.get("firing_rate") is not None]
        rate = f"{100 * statistics.fmean(rates):.1f}" if rates else "-"
        e_ann = statistics.fmean(r["energy_ann_uj"] for r in recs)
        e_hyb = statistics.fmean(r["energy_hybrid_uj"] for r in recs)
        energy = f"{e_ann:.2f}" if not row.hybrid else f"{e_ann:.2f} → {e_hyb:.2f}"
        top1 = _mean_spread([r["top1"] for r in recs])
        imgs = f"{recs[0]['train_samples']}/{recs[0]['eval_samples']}"
        lines.append(
            f"| {row.label} | {len(recs)} | {top1} | {step} | {rate} | {energy} | {imgs} |"
        )
    return "\n".join(lines) + ("\n\n" + budget_note if budget_note else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="whole data set, 10 epochs (GPU)")
    ap.add_argument("--out", default="runs/reproduce", help="folder for results.jsonl")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1,2)")
    ap.add_argument("--only", default=None, help="comma list of row keys")
    ap.add_argument("--skip-expensive", action="store_true", help="leave out the VGG-b16 hybrids")
    ap.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (CPU: 0)")
    ap.add_argument("--table", action="store_true", help="print the table and exit")
    ap.add_argument("--step-costs", action="store_true",
                    help="measure train-step time of the rows round-robin, write step_costs.json")  # fmt: skip
    ap.add_argument("--limit-train", type=int, default=None, help="override the budget")
    ap.add_argument("--limit-eval", type=int, default=None, help="override the budget")
    ap.add_argument("--epochs", type=int, default=None,
                    help="override the budget (3 on the CPU budget: issue 9's 3x budget)")  # fmt: skip
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    if args.workers is None:
        args.workers = 0 if args.device == "cpu" else 8
    budget = FULL_BUDGET if args.full else CPU_BUDGET
    if args.seeds:
        budget = Budget(
            **{**budget.__dict__, "seeds": tuple(int(s) for s in args.seeds.split(","))}
        )
    for key in ("limit_train", "limit_eval", "epochs"):
        if getattr(args, key) is not None:
            budget = Budget(**{**budget.__dict__, key: getattr(args, key)})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    meta = {"budget": budget.__dict__, "device": args.device, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "threads": args.threads}  # fmt: skip
    if args.table:
        costs_path = out / "step_costs.json"
        costs = (
            json.loads(costs_path.read_text())["seconds_per_step"] if costs_path.exists() else None
        )
        print(table(read_jsonl(path), json.dumps(meta), costs))
        return
    wanted = set(args.only.split(",")) if args.only else None
    if args.step_costs:
        keys = [r.key for r in rows() if (wanted is None or r.key in wanted) and not r.expensive]
        costs = step_costs(keys, budget, args.device)
        atomic_write_json(out / "step_costs.json", {"meta": meta, "seconds_per_step": costs})
        for key, sec in costs.items():
            print(f"{key:22s} {sec:.3f} s/step")
        return
    atomic_write_json(out / "budget.json", meta)
    todo = [r for r in rows() if (wanted is None or r.key in wanted)]
    if args.skip_expensive:
        todo = [r for r in todo if not r.expensive]
    done = {(r["row"], r["seed"]) for r in read_jsonl(path)}
    # All cheap rows for seed 0, then seeds 1, 2; expensive rows last with one seed on a CPU.
    plan = [(r, s) for s in budget.seeds for r in todo if not r.expensive]
    exp_seeds = budget.seeds if args.full else budget.seeds[:1]
    plan += [(r, s) for r in todo if r.expensive for s in exp_seeds]
    for row, seed in plan:
        if (row.key, seed) in done:
            continue
        t0 = time.perf_counter()
        rec = run_one(row, seed, budget, args.device, args.workers)
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        append_jsonl(path, rec)
        print(f"{row.key:22s} seed {seed}: top-1 {100 * rec['top1']:.1f}%  "
              f"{rec['train_time_s']:.1f} s/epoch  wall {rec['wall_s']} s", flush=True)  # fmt: skip
    print(table(read_jsonl(path), json.dumps(meta)))


if __name__ == "__main__":
    main()
