"""`hybridize export CHECKPOINT --format onnx|pt2|nir`: export with a parity check."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

import hybridize
from hybridize.errors import HybridizeError
from hybridize_cli.checks import export_folder, output_file

# the options each format uses besides the common ones; giving another is an error, not a no-op
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "onnx": ("--opset", "--exporter", "--batch-size", "--max-flip-fraction"),
    "pt2": ("--batch-size",),
    "nir": (),
}


def _example_shape(model: object, img_size: int | None, batch_size: int | None) -> list[int]:
    shape = list(hybridize.default_example(model, img_size).shape)
    # a batch of 2 keeps the tracer from specialising size-1 axes; the axis is dynamic anyway
    shape[0] = batch_size if batch_size is not None else 2
    return shape


def _export(
    checkpoint: Path = typer.Argument(..., help="A hybrid checkpoint (.safetensors)."),
    format: str = typer.Option(..., "--format", "-f", help="onnx, pt2 or nir."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or folder for nir (default: beside the checkpoint).",
    ),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset version (default 17)."),
    exporter: str | None = typer.Option(
        None,
        "--exporter",
        help="ONNX exporter: torchscript, dynamo (opset >= 18), or auto (torchscript, then "
        "dynamo where it fails).",
    ),
    img_size: int | None = typer.Option(
        None, "--img-size", min=1, help="Input height and width (default: the checkpoint's)."
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Export with this static batch size (default: a dynamic batch axis).",
    ),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Run the parity check (onnxruntime / reloaded pt2)."
    ),
    real: bool = typer.Option(
        True, "--real/--no-real", help="Also check on real sample images (foolbox)."
    ),
    max_flip_fraction: float | None = typer.Option(
        None,
        "--max-flip-fraction",
        help="Flipped-spike fraction the onnx check accepts (default 1e-3; docs/export.md).",
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Run code the checkpoint names (a module:callable model, recipe imports).",
    ),
) -> None:
    """Export a hybrid to ONNX, torch.export (.pt2) or NIR (a folder) and print the report."""
    fmt = format.lower()
    if fmt not in FORMAT_OPTIONS:
        raise HybridizeError(f"--format {format!r} is not supported; use onnx, pt2 or nir")
    given = {
        "--opset": opset,
        "--exporter": exporter,
        "--batch-size": batch_size,
        "--max-flip-fraction": max_flip_fraction,
    }
    unused = [name for name, value in given.items() if value is not None]
    unused = [name for name in unused if name not in FORMAT_OPTIONS[fmt]]
    if unused:
        them = "them" if len(unused) > 1 else "it"
        raise HybridizeError(f"{', '.join(unused)}: not used by --format {fmt}; leave {them} out")
    if max_flip_fraction is not None and not 0.0 <= max_flip_fraction <= 1.0:
        raise HybridizeError(
            f"--max-flip-fraction {max_flip_fraction:g}: give a fraction from 0 to 1"
        )
    if fmt == "nir":  # a folder, new or an earlier NIR export's
        dest = output or checkpoint.with_name(f"{checkpoint.stem}-nir")
        export_folder(dest, "--output")
    else:
        output_file(output, "--output")
        dest = output or checkpoint.with_suffix(f".{fmt}")
    from hybridize.io import refuse_same_file  # torch: not at startup (--help)

    refuse_same_file(dest, checkpoint)
    import torch

    with hybridize.trusting_code(trust_code):
        model = hybridize.load(checkpoint)
    example = torch.rand(_example_shape(model, img_size, batch_size))
    real_inputs = None if real else False
    if fmt == "nir":
        report = hybridize.export_nir(
            model, dest, example, check=check, real_inputs=real_inputs, verify=check
        )
    else:
        kwargs: dict = dict(dynamic_batch=batch_size is None, check=check, real_inputs=real_inputs)
        if max_flip_fraction is not None:
            kwargs["max_flip_fraction"] = max_flip_fraction
        if fmt == "onnx":
            kwargs.update(
                opset=17 if opset is None else opset,
                exporter="auto" if exporter is None else exporter,
            )
            report = hybridize.export_onnx(model, example, dest, **kwargs)
        else:
            report = hybridize.export_pt2(model, example, dest, **kwargs)
    console = Console()
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `export` command to the application."""
    app.command("export")(_export)
