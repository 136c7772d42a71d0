"""``hybridize finetune CHECKPOINT --data NAME ...`` (also under torchrun, or ``--devices K``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console

import hybridize
from hybridize.errors import HybridizeError
from hybridize_cli.checks import amp_callback, device_callback, run_folder

console = Console()


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """Names and shapes of the tensors in a safetensors file; None when it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception:  # not safetensors, or unreadable: the library reports it on load
        return None


def check_resume(checkpoint: Path, out: Path) -> None:
    """``--resume`` continues the run in ``out`` only when it trains the same model."""
    last = out / "last.safetensors"
    if not last.is_file():  # the library says what a resume needs
        return
    given, saved = _tensor_shapes(checkpoint), _tensor_shapes(last)
    if given is None or saved is None or given == saved:
        return
    diff = sorted(set(given) ^ set(saved)) or sorted(k for k in given if given[k] != saved[k])
    key = diff[0]
    raise HybridizeError(
        f"--resume: the run in {out} trains another model than {checkpoint} ({len(diff)} "
        f"tensor(s) differ, e.g. {key!r}: {given.get(key, 'absent')} here, "
        f"{saved.get(key, 'absent')} in the run); give that run's checkpoint or another --out"
    )


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


def relaunch_with_torchrun(devices: int) -> int:
    """Run this same command line under ``torch.distributed.run`` with ``devices`` processes."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={devices}", "-m", "hybridize_cli", *_strip_devices(sys.argv[1:]),
    ]  # fmt: skip
    return subprocess.call(cmd)


def register(app: typer.Typer) -> None:
    @app.command("finetune")
    def finetune_cmd(
        checkpoint: Path = typer.Argument(..., help="Hybrid (or plain) checkpoint to fine-tune."),
        data: str = typer.Option(
            "fashion-mnist",
            "--data",
            help="fashion-mnist | mnist | cifar10 | cifar100 | imagefolder:PATH",
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
        warmup_epochs: float | None = typer.Option(None, "--warmup-epochs"),
        weight_decay: float | None = typer.Option(None, "--weight-decay"),
        ann_lr_scale: float | None = typer.Option(
            None, "--ann-lr-scale", help="ANN lr = lr x this; 0 freezes the pretrained ANN."
        ),
        preset: str | None = typer.Option(None, "--preset", help="has8-small | has8-imagenet"),
        amp: str | None = typer.Option(
            None, "--amp", callback=amp_callback, help="bf16 | fp16 | off"
        ),
        compile_: bool = typer.Option(False, "--compile", help="torch.compile the model."),
        limit_train_batches: int | None = typer.Option(None, "--limit-train-batches", min=1),
        limit_train: int | None = typer.Option(
            None, "--limit-train", min=1, help="Training samples kept."
        ),
        limit_eval: int | None = typer.Option(
            None, "--limit-eval", min=1, help="Eval samples kept."
        ),
        img_size: int | None = typer.Option(None, "--img-size", min=1, help="Input size (px)."),
        no_augment: bool = typer.Option(False, "--no-augment", help="No random crop/flip."),
        paper_inputs: bool = typer.Option(
            False, "--paper-inputs", help="Inputs in [0, 1], no mean/std, flip only."
        ),
        grad_clip: float | None = typer.Option(None, "--grad-clip", help="Clip the grad norm."),
        seed: int | None = typer.Option(None, "--seed"),
        workers: int | None = typer.Option(None, "--workers", min=0, help="DataLoader workers."),
        sync_bn: bool = typer.Option(False, "--sync-bn", help="SyncBatchNorm under DDP."),
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
            code = relaunch_with_torchrun(devices)
            raise typer.Exit(128 - code if code < 0 else code)  # killed by signal N: 128 + N
        if out is None:
            tag = data.split(":")[-1].strip("/").replace("/", "_")
            out = Path("runs") / f"{checkpoint.name.removesuffix('.safetensors')}-{tag}"
        run_folder(out)
        if resume:
            check_resume(checkpoint, out)
        with hybridize.trusting_code(trust_code):
            result = hybridize.finetune(
                checkpoint,
                data,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                optimizer=optimizer,
                scheduler=scheduler,
                warmup_epochs=warmup_epochs,
                weight_decay=weight_decay,
                ann_lr_scale=ann_lr_scale,
                preset=preset,
                amp=amp,
                compile=compile_ or None,
                limit_train_batches=limit_train_batches,
                limit_train=limit_train,
                limit_eval=limit_eval,
                img_size=img_size,
                augment=False if no_augment else None,
                paper_inputs=paper_inputs or None,
                grad_clip=grad_clip,
                seed=seed,
                workers=workers,
                sync_bn=sync_bn or None,
                data_root=data_root,
                out=out,
                resume=resume,
                device=device,
                console=console,
            )
        if int(os.environ.get("RANK", "0")) != 0:
            return
        best = "n/a" if result.best_top1 is None else f"{100 * result.best_top1:.2f}%"
        console.print(f"done: best top-1 {best}; checkpoints {result.last} and {result.best}")
