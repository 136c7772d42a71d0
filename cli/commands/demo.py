"""``hybridize demo``: the main job on the embedded default, offline on a CPU.

The experiment is ``hybridize.run_demo`` (pretrained ImageNet EfficientNet-Lite0 and its
``has8-finetune`` hybrid fine-tuned on a Fashion-MNIST subset); this module prints its table.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hybridize
from hybridize_cli.checks import device_callback, run_folder
from hybridize_cli.progress import RichProgress

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(
            Path("runs/demo"), "--out", help="Folder for checkpoints and metrics."
        ),
        full: bool = typer.Option(False, "--full", help="Whole data set, 64 px, 3 epochs (GPU)."),
        data_root: str | None = typer.Option(None, "--data-root", help="Fashion-MNIST folder."),
        img_size: int | None = typer.Option(
            None, "--img-size", min=1, help="Image size in px (default 32; --full 64)."
        ),
        batch_size: int | None = typer.Option(
            None, "--batch-size", min=1, help="Batch size (default 32; --full 128)."
        ),
        limit_train: int | None = typer.Option(
            None, "--limit-train", min=1, help="Training images."
        ),
        limit_eval: int | None = typer.Option(None, "--limit-eval", min=1, help="Eval images."),
        epochs: int | None = typer.Option(
            None, "--epochs", min=1, help="Epochs (default 1; --full 3)."
        ),
        lr: float = typer.Option(5e-3, "--lr", help="lr of the twins and gates."),
        ann_lr_scale: float = typer.Option(0.2, "--ann-lr-scale", help="ANN lr = lr x this."),
        weights: str | None = typer.Option(None, "--weights", help="Local ImageNet weights file."),
        device: str | None = typer.Option(
            None, "--device", callback=device_callback, help="cpu | cuda | cuda:N (auto)."
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=0, help="DataLoader workers (default: CPUs - 1, at most 8)."
        ),
    ) -> None:
        """Fine-tune pretrained EfficientNet-Lite0 and its has8-finetune hybrid on Fashion-MNIST."""
        run_folder(out)
        with RichProgress(console) as progress:
            result = hybridize.run_demo(
                out, full=full, data_root=data_root, weights=weights, lr=lr,
                ann_lr_scale=ann_lr_scale, device=device, workers=workers, progress=progress,
                img_size=img_size, batch_size=batch_size, limit_train=limit_train,
                limit_eval=limit_eval, epochs=epochs,
            )  # fmt: skip
        console.print(_table(result.ann, result.hybrid))
        console.print(f"checkpoints and metrics.jsonl under {out}/ann and {out}/hybrid")


def _ratio(x: float | None, y: float | None) -> str:
    return f"{y / x:.2f}x" if x and y else "-"


def _table(a, h) -> Table:
    """The ANN (``a``) beside the hybrid (``h``): two ``hybridize`` demo rows."""
    t = Table(title="Fashion-MNIST: fine-tuned ANN vs has8-finetune hybrid")
    t.add_column("", justify="left")
    for col in ("ANN", "hybrid", "hybrid / ANN"):
        t.add_column(col, justify="right")
    t.add_row("top-1", f"{100 * a.top1:.2f}%", f"{100 * h.top1:.2f}%", "")
    t.add_row("top-5", f"{100 * a.top5:.2f}%", f"{100 * h.top5:.2f}%", "")
    t.add_row("eval loss", f"{a.eval_loss:.4f}", f"{h.eval_loss:.4f}", "")
    t.add_row(
        "params", f"{a.params / 1e6:.2f} M", f"{h.params / 1e6:.2f} M",
        _ratio(a.params, h.params),
    )  # fmt: skip
    t.add_row(
        "train img/s", f"{a.train_images_per_s:.1f}", f"{h.train_images_per_s:.1f}",
        _ratio(a.train_images_per_s, h.train_images_per_s),
    )  # fmt: skip
    if a.eval_images_per_s and h.eval_images_per_s:
        t.add_row(
            "eval img/s", f"{a.eval_images_per_s:.1f}", f"{h.eval_images_per_s:.1f}",
            _ratio(a.eval_images_per_s, h.eval_images_per_s),
        )  # fmt: skip
    t.add_row("time", f"{a.time_s:.0f} s", f"{h.time_s:.0f} s", _ratio(a.time_s, h.time_s))
    rate = "-" if h.firing_rate is None else f"{h.firing_rate:.3f}"
    gate = "-" if h.gate_mean is None else f"{h.gate_mean:+.4f}"
    t.add_row("firing rate / mean gate", "-", f"{rate} / {gate}", "")
    return t
