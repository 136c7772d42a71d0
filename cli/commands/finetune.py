"""``hybridize finetune CHECKPOINT --data NAME ...`` (also under torchrun, or ``--devices K``)."""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

import hybridize
from hybridize_cli.checks import amp_callback, device_callback, run_folder
from hybridize_cli.progress import RichProgress

console = Console()


def config_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The options a command was given that are fine-tuning options (fields of
    ``hybridize.FinetuneConfig``); None (not given) is left out, for the preset or the run."""
    names = {f.name for f in fields(hybridize.FinetuneConfig)}
    renamed = {k.rstrip("_"): v for k, v in params.items()}  # compile_ -> compile
    return {k: v for k, v in renamed.items() if k in names and v is not None}


def _strip_devices(argv: list[str]) -> list[str]:
    """``argv`` without ``--devices K`` / ``--devices=K``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--devices":
            skip = True
            continue
        if arg.startswith("--devices="):
            continue
        out.append(arg)
    return out


def command_line(ctx: typer.Context) -> list[str]:
    """The arguments this command was parsed from: those given to ``main_entry`` (its context
    object), else the process's own."""
    obj = ctx.find_root().obj
    return list(obj["argv"]) if isinstance(obj, dict) and "argv" in obj else sys.argv[1:]


def relaunch_with_torchrun(devices: int, argv: list[str]) -> NoReturn:
    """Become ``torch.distributed.run`` running the command line ``argv`` with ``devices``
    processes. The process is replaced (exec), not waited on: Ctrl-C, SIGTERM from a scheduler
    and the exit status reach torchrun itself, which stops its workers in order (a waiting
    parent would SIGKILL it on Ctrl-C and die alone on SIGTERM, leaving the workers running)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={devices}", "-m", "hybridize_cli", *_strip_devices(argv),
    ]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, cmd)


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        ctx: typer.Context,
        checkpoint: Path = typer.Argument(..., help="Hybrid (or plain) checkpoint to fine-tune."),
        data: str | None = typer.Option(
            None,
            "--data",
            help="fashion-mnist | mnist | cifar10 | cifar100 | imagefolder:PATH (default "
            "fashion-mnist; with --resume, the run's own).",
        ),
        data_root: str | None = typer.Option(
            None, "--data-root", help="Folder holding the data set."
        ),
        epochs: int | None = typer.Option(None, "--epochs", min=1, help="Epochs (default 1)."),
        batch_size: int | None = typer.Option(
            None, "--batch-size", min=1, help="Global batch size."
        ),
        lr: float | None = typer.Option(None, "--lr", help="Learning rate of the spiking side."),
        optimizer: str | None = typer.Option(None, "--optimizer", help="adamw | adam | sgd"),
        scheduler: str | None = typer.Option(None, "--scheduler", help="cosine | none"),
        warmup_epochs: float | None = typer.Option(
            None, "--warmup-epochs", help="Linear warm-up epochs (default 0)."
        ),
        weight_decay: float | None = typer.Option(
            None,
            "--weight-decay",
            help="Weight decay (default 0.05; none on gates, norms, biases).",
        ),
        ann_lr_scale: float | None = typer.Option(
            None, "--ann-lr-scale", help="ANN lr = lr x this; 0 freezes the pretrained ANN."
        ),
        preset: str | None = typer.Option(None, "--preset", help="has8-small | has8-imagenet"),
        amp: str | None = typer.Option(
            None, "--amp", callback=amp_callback, help="bf16 | fp16 | off"
        ),
        compile_: bool | None = typer.Option(
            None, "--compile/--no-compile", help="torch.compile the model."
        ),
        channels_last: bool | None = typer.Option(
            None,
            "--channels-last/--no-channels-last",
            help="Weights and images channels-last (NHWC): faster convolutions.",
        ),
        limit_train_batches: int | None = typer.Option(
            None, "--limit-train-batches", min=1, help="Training steps per epoch at most."
        ),
        limit_train: int | None = typer.Option(
            None, "--limit-train", min=1, help="Training samples kept."
        ),
        limit_eval: int | None = typer.Option(
            None, "--limit-eval", min=1, help="Eval samples kept."
        ),
        img_size: int | None = typer.Option(None, "--img-size", min=1, help="Input size (px)."),
        augment: bool | None = typer.Option(
            None, "--augment/--no-augment", help="Random crop/flip (on by default)."
        ),
        paper_inputs: bool | None = typer.Option(
            None,
            "--paper-inputs/--no-paper-inputs",
            help="Inputs in [0, 1], no mean/std, flip only.",
        ),
        grad_clip: float | None = typer.Option(None, "--grad-clip", help="Clip the grad norm."),
        seed: int | None = typer.Option(
            None, "--seed", help="Seed of data order, augmentation, init (default 0)."
        ),
        workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader workers."),
        sync_bn: bool | None = typer.Option(
            None, "--sync-bn/--no-sync-bn", help="SyncBatchNorm under DDP."
        ),
        out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/NAME-DATA)."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
        devices: int = typer.Option(
            1, "--devices", min=1, help="Processes to launch with torchrun."
        ),
        device: str | None = typer.Option(
            None, "--device", callback=device_callback, help="cpu | cuda | cuda:N (auto)."
        ),
        trust_code: bool = typer.Option(
            False,
            "--trust-code",
            help="Run code the checkpoint names (a module:callable model, recipe imports).",
        ),
    ) -> None:
        """Fine-tune a hybrid end to end; checkpoints, metrics.jsonl and resume under --out."""
        if devices > 1 and "WORLD_SIZE" not in os.environ:
            relaunch_with_torchrun(devices, command_line(ctx))
        if out is None:
            tag = (data or "fashion-mnist").split(":")[-1].strip("/").replace("/", "_")
            out = Path("runs") / f"{checkpoint.name.removesuffix('.safetensors')}-{tag}"
        run_folder(out)
        main = int(os.environ.get("RANK", "0")) == 0
        with hybridize.trusting_code(trust_code), RichProgress(console, main) as progress:
            result = hybridize.finetune(
                checkpoint, data, out=out, resume=resume, device=device, data_root=data_root,
                progress=progress, **config_overrides(ctx.params),
            )  # fmt: skip
        if not main:
            return
        best = "n/a" if result.best_top1 is None else f"{100 * result.best_top1:.2f}%"
        console.print(f"done: best top-1 {best}; checkpoints {result.last} and {result.best}")
