"""`hybridize inspect CHECKPOINT`: per-region ops, firing rates, gates, energy; plots; graph."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import hybridize


def _si(x: float | None) -> str:
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _gate(values: list[float] | None) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"mean {sum(values) / len(values):.3g} ({len(values)} ch)"


def _tables(report: object) -> list[Table]:
    regions = Table(
        title=f"spiking regions (per image, {report.n_samples} images, energy "
        f"{report.energy_preset}: {report.e_mac_pj:g} pJ/MAC, {report.e_ac_pj:g} pJ/AC)"
    )
    for col in (
        "region",
        "mode",
        "T",
        "params ANN/twin",
        "ANN MACs",
        "twin MACs",
        "twin ACs",
        "twin dense",
        "rate",
        "gate",
        "energy ANN -> hybrid (µJ)",
    ):
        regions.add_column(col, justify="left" if col in ("region", "mode") else "right")
    for r in report.regions:
        regions.add_row(
            r.name,
            r.mode,
            str(r.time_steps or "-"),
            f"{_si(r.params_ann)}/{_si(r.params_twin)}",
            _si(r.ann_macs),
            _si(r.twin_macs),
            _si(r.twin_acs),
            _si(r.twin_dense_macs),
            "-" if r.firing_rate is None else f"{100 * r.firing_rate:.2f}%",
            _gate(r.gate),
            f"{r.energy_ann_pj / 1e6:.3g} -> {r.energy_hybrid_pj / 1e6:.3g}",
        )
    regions.caption = (
        f"ops outside regions: {_si(report.outside_macs)} MACs; whole model "
        f"{report.energy_ann_pj / 1e6:.4g} µJ (ANN) vs {report.energy_hybrid_pj / 1e6:.4g} µJ "
        "(hybrid) per image"
    )
    layers = Table(title="LIF layers")
    for col in ("layer", "region", "T", "neurons", "firing rate"):
        layers.add_column(col, justify="left" if col in ("layer", "region") else "right")
    for layer in report.layers:
        layers.add_row(
            layer.name,
            layer.region,
            str(layer.time_steps),
            _si(layer.neurons),
            f"{100 * layer.rate:.2f}%",
        )
    return [regions, layers]


def _inspect(
    checkpoint: Path = typer.Argument(..., help="A hybrid checkpoint (.safetensors)."),
    data: str = typer.Option(
        "samples",
        "--data",
        help="samples (real images), random, or a data set name (fashion-mnist, cifar10, ...).",
    ),
    batches: int = typer.Option(1, "--batches", help="Number of batches to run."),
    batch_size: int = typer.Option(8, "--batch-size", help="Images per batch."),
    img_size: int | None = typer.Option(None, "--img-size", help="Input size in pixels."),
    data_root: str | None = typer.Option(None, "--data-root", help="Folder of the data set."),
    energy: str = typer.Option("45nm", "--energy", help="Energy preset: 45nm, fp16 or int8."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots to this folder."),
    metrics: Path | None = typer.Option(
        None, "--metrics", help="A finetune metrics.jsonl to plot as training curves."
    ),
    graph: Path | None = typer.Option(
        None, "--graph", help="Write a picture of the graph (FILE.svg or FILE.html)."
    ),
) -> None:
    """Measure a hybrid per region: ops, firing rates, gates and energy."""
    model = hybridize.load(checkpoint)
    report = hybridize.inspect(
        model,
        data,
        energy=energy,
        max_batches=batches,
        batch_size=batch_size,
        img_size=img_size,
        data_root=data_root,
    )
    console = Console()
    for table in _tables(report):
        console.print(table)
    if json_out is not None:
        console.print(f"report: {report.save_json(json_out)}")
    if plots is not None or metrics is not None:
        from hybridize.metrics.plots import save_plots

        for p in save_plots(report, plots or Path("."), metrics):
            console.print(f"plot: {p}")
    if graph is not None:
        from hybridize.metrics.graph import render_graph

        console.print(f"graph: {render_graph(model, graph)}")


def register(app: typer.Typer) -> None:
    """Add the `inspect` command to the application."""
    app.command("inspect")(_inspect)
