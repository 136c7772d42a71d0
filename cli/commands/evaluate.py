"""``hybridize evaluate CHECKPOINT --data NAME``: top-1/top-5, loss, firing rate."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hybridize
from hybridize_cli.checks import amp_callback, device_callback

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_cmd(
        checkpoint: Path = typer.Argument(..., help="Checkpoint to evaluate."),
        data: str = typer.Option("fashion-mnist", "--data", help="Data set (as for finetune)."),
        data_root: str | None = typer.Option(
            None, "--data-root", help="Folder holding the data set."
        ),
        batch_size: int = typer.Option(128, "--batch-size", min=1, help="Images per batch."),
        img_size: int | None = typer.Option(None, "--img-size", min=1, help="Input size (px)."),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="Eval samples kept (seeded)."
        ),
        paper_inputs: bool = typer.Option(False, "--paper-inputs", help="[0, 1] inputs."),
        amp: str = typer.Option("off", "--amp", callback=amp_callback, help="bf16 | fp16 | off"),
        device: str | None = typer.Option(
            None, "--device", callback=device_callback, help="cpu | cuda | cuda:N (auto)."
        ),
        workers: int | None = typer.Option(
            None, "--workers", min=0, help="DataLoader workers (default: CPUs - 1, at most 8)."
        ),
        as_json: bool = typer.Option(
            False,
            "--json",
            help="Print the figures as one JSON line on stdout (inspect's --json takes a file).",
        ),
        trust_code: bool = typer.Option(
            False,
            "--trust-code",
            help="Run code the checkpoint names (a module:callable model, recipe imports).",
        ),
    ) -> None:
        """Evaluate a checkpoint on the eval split of a data set."""
        with hybridize.trusting_code(trust_code):
            r = hybridize.evaluate(
                checkpoint,
                data,
                data_root=data_root,
                batch_size=batch_size,
                img_size=img_size,
                limit=limit,
                paper_inputs=paper_inputs,
                amp=amp,
                device=device,
                workers=workers,
            )
        if as_json:
            typer.echo(json.dumps(r, sort_keys=True))
            return
        table = Table(title=f"{checkpoint.name} on {data} ({r['eval_samples']} images)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_row("top-1", f"{100 * r['eval_top1']:.2f}%")
        table.add_row("top-5", f"{100 * r['eval_top5']:.2f}%")
        table.add_row("loss", f"{r['eval_loss']:.4f}")
        if r["firing_rate"] is not None:
            table.add_row("firing rate", f"{r['firing_rate']:.4f}")
        if r["gates"]:
            g = list(r["gates"].values())
            table.add_row(
                "gates (mean / min / max)",
                f"{sum(g) / len(g):+.4f} / {min(g):+.4f} / {max(g):+.4f}",
            )
        console.print(table)
