"""``hybridize demo``: the main job on the embedded default, offline on a CPU.

Pretrained ImageNet EfficientNet-Lite0 -> ``has8-finetune`` hybrid -> fine-tune on a
Fashion-MNIST subset -> evaluate, beside the same ANN fine-tuned the same way.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hybridize
from hybridize_cli.checks import device_callback, run_folder

console = Console()
MODEL = "tf_efficientnet_lite0"
RECIPE = "has8-finetune"

# Sized by measurement on 2 shared CPU cores (docs/training.md): the hybrid's train step at
# 32 px is ~7-8x the ANN's; 180 hybrid steps take about 5 minutes of an idle 2-core machine.
DEMO = dict(img_size=32, batch_size=32, limit_train=5760, limit_eval=1000, epochs=1)
FULL = dict(img_size=64, batch_size=128, limit_train=None, limit_eval=None, epochs=3)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader sees the old summary or the new one


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(
            Path("runs/demo"), "--out", help="Folder for checkpoints and metrics."
        ),
        full: bool = typer.Option(False, "--full", help="Whole data set, 64 px, 3 epochs (GPU)."),
        data_root: str | None = typer.Option(None, "--data-root", help="Fashion-MNIST folder."),
        img_size: int | None = typer.Option(None, "--img-size", min=1),
        batch_size: int | None = typer.Option(None, "--batch-size", min=1),
        limit_train: int | None = typer.Option(
            None, "--limit-train", min=1, help="Training images."
        ),
        limit_eval: int | None = typer.Option(None, "--limit-eval", min=1, help="Eval images."),
        epochs: int | None = typer.Option(None, "--epochs", min=1),
        lr: float = typer.Option(5e-3, "--lr", help="lr of the twins and gates."),
        ann_lr_scale: float = typer.Option(0.2, "--ann-lr-scale", help="ANN lr = lr x this."),
        weights: str | None = typer.Option(None, "--weights", help="Local ImageNet weights file."),
        device: str | None = typer.Option(None, "--device", callback=device_callback),
        workers: int | None = typer.Option(None, "--workers", min=0),
    ) -> None:
        """Fine-tune pretrained EfficientNet-Lite0 and its has8-finetune hybrid on Fashion-MNIST."""
        import torch

        base = dict(FULL if full else DEMO)
        given = dict(
            img_size=img_size, batch_size=batch_size, limit_train=limit_train,
            limit_eval=limit_eval, epochs=epochs,
        )  # fmt: skip
        base.update({k: v for k, v in given.items() if v is not None})
        if full:
            base["limit_train"], base["limit_eval"] = limit_train, limit_eval
        size = base["img_size"]
        run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        console.print(
            f"[bold]demo[/]: {MODEL} (ImageNet) -> {RECIPE} hybrid, Fashion-MNIST "
            f"{base['limit_train'] or 'all'} train / {base['limit_eval'] or 'all'} eval images, "
            f"{size} px, {base['epochs']} epoch(s), batch {base['batch_size']}"
        )

        def pretrained():
            torch.manual_seed(0)  # the same new 10-class head for both models
            return hybridize.create_model(
                MODEL, pretrained=weights is None, weights=weights, num_classes=10
            )

        rows = {}
        common = dict(
            data_root=data_root, lr=lr, ann_lr_scale=ann_lr_scale, device=device,
            workers=workers, console=console, seed=0, **base,
        )  # fmt: skip
        for tag in ("ann", "hybrid"):
            t0 = time.perf_counter()
            model = pretrained()
            if tag == "hybrid":
                model = hybridize.convert(
                    model, RECIPE, example_input=torch.zeros(1, 3, size, size)
                )
            result = hybridize.finetune(model, "fashion-mnist", out=out / tag, tag=tag, **common)
            last = result.history[-1]
            rows[tag] = {
                "top1": last["eval_top1"],
                "top5": last["eval_top5"],
                "eval_loss": last["eval_loss"],
                "params": _params(result.model),
                "train_images_per_s": last["images_per_s"],
                "eval_images_per_s": last.get("eval_images_per_s"),
                "firing_rate": last.get("firing_rate"),
                "gate_mean": (
                    sum(last["gates"].values()) / len(last["gates"]) if last.get("gates") else None
                ),
                "time_s": time.perf_counter() - t0,
                "checkpoint": str(result.last),
            }
        _write_json(
            out / "summary.json", {"config": {"model": MODEL, "recipe": RECIPE, **base}, **rows}
        )
        console.print(_table(rows))
        console.print(f"checkpoints and metrics.jsonl under {out}/ann and {out}/hybrid")


def _table(rows: dict) -> Table:
    a, h = rows["ann"], rows["hybrid"]
    t = Table(title="Fashion-MNIST: fine-tuned ANN vs has8-finetune hybrid")
    for col, justify in (
        ("", "left"),
        ("ANN", "right"),
        ("hybrid", "right"),
        ("hybrid / ANN", "right"),
    ):
        t.add_column(col, justify=justify)

    def ratio(x, y):
        return f"{y / x:.2f}x" if x and y else "-"

    t.add_row("top-1", f"{100 * a['top1']:.2f}%", f"{100 * h['top1']:.2f}%", "")
    t.add_row("top-5", f"{100 * a['top5']:.2f}%", f"{100 * h['top5']:.2f}%", "")
    t.add_row("eval loss", f"{a['eval_loss']:.4f}", f"{h['eval_loss']:.4f}", "")
    t.add_row(
        "params",
        f"{a['params'] / 1e6:.2f} M",
        f"{h['params'] / 1e6:.2f} M",
        ratio(a["params"], h["params"]),
    )
    t.add_row(
        "train img/s", f"{a['train_images_per_s']:.1f}", f"{h['train_images_per_s']:.1f}",
        ratio(a["train_images_per_s"], h["train_images_per_s"]),
    )  # fmt: skip
    if a["eval_images_per_s"] and h["eval_images_per_s"]:
        t.add_row(
            "eval img/s", f"{a['eval_images_per_s']:.1f}", f"{h['eval_images_per_s']:.1f}",
            ratio(a["eval_images_per_s"], h["eval_images_per_s"]),
        )  # fmt: skip
    t.add_row(
        "time", f"{a['time_s']:.0f} s", f"{h['time_s']:.0f} s", ratio(a["time_s"], h["time_s"])
    )
    rate = "-" if h["firing_rate"] is None else f"{h['firing_rate']:.3f}"
    gate = "-" if h["gate_mean"] is None else f"{h['gate_mean']:+.4f}"
    t.add_row("firing rate / mean gate", "-", f"{rate} / {gate}", "")
    return t
