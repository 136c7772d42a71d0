"""`hybridize inspect CHECKPOINT`: per-region ops, firing rates, gates, energy; plots; graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

import hybridize
from hybridize.errors import HybridizeError
from hybridize_cli.checks import input_file, output_file, output_folder


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


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.3g}%"


def _table(title: str, columns: list[str], rows: list[list[str]], left: int = 1) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < left else "right", no_wrap=i < left)
    for row in rows:
        table.add_row(*row)
    return table


def _source(inputs: str) -> str:
    if inputs == "random":  # firing rates of noise: say so where the rates are read
        return "random inputs, uniform [0, 1]; rates need real images: --data samples or a set"
    return inputs


def _tables(report: Any) -> list[Table]:
    regions = _table(
        f"spiking regions ({report.n_samples} images: {_source(report.inputs)})",
        ["region", "mode", "T", "params ANN", "params twin", "gate", "firing rate"],
        [
            [
                r.name,
                r.mode,
                str(r.time_steps or "-"),
                _si(r.params_ann),
                _si(r.params_twin),
                _gate(r.gate),
                _pct(r.firing_rate),
            ]
            for r in report.regions
        ],
        left=2,
    )
    ops = _table(
        f"operations and energy per image ({report.energy_preset}: {report.e_mac_pj:g} pJ/MAC, "
        f"{report.e_ac_pj:g} pJ/AC)",
        ["region", "ANN MACs", "twin MACs", "twin ACs", "twin dense", "ANN µJ", "hybrid µJ"],
        [
            [
                r.name,
                _si(r.ann_macs),
                _si(r.twin_macs),
                _si(r.twin_acs),
                _si(r.twin_dense_macs),
                f"{r.energy_ann_pj / 1e6:.3g}",
                f"{r.energy_hybrid_pj / 1e6:.3g}",
            ]
            for r in report.regions
        ],
    )
    ops.caption = (
        f"outside regions: {_si(report.outside_macs)} MACs; whole model "
        f"{report.energy_ann_pj / 1e6:.4g} µJ as ANN vs {report.energy_hybrid_pj / 1e6:.4g} µJ "
        "as hybrid"
    )
    layers = _table(
        "LIF layers",
        ["layer", "region", "T", "neurons", "firing rate"],
        [
            [a.name, a.region, str(a.time_steps), _si(a.neurons), _pct(a.rate)]
            for a in report.layers
        ],
        left=2,
    )
    return [regions, ops, layers]


def _inspect(
    checkpoint: Path = typer.Argument(..., help="A hybrid checkpoint (.safetensors)."),
    data: str = typer.Option(
        "auto",
        "--data",
        help="auto (samples when installed, else random), samples (real images: pip install "
        "'hybridize\\[samples]'), random, or a data set name (fashion-mnist, cifar10, ...).",
    ),
    batches: int = typer.Option(1, "--batches", min=1, help="Number of batches to run."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Images per batch."),
    img_size: int | None = typer.Option(None, "--img-size", min=1, help="Input size in pixels."),
    data_root: str | None = typer.Option(None, "--data-root", help="Folder of the data set."),
    energy: str = typer.Option(
        "45nm",
        "--energy",
        help="Energy preset: 45nm (= 45nm-fp32, fp32), fp16 (= 45nm-fp16) or int8 (= 45nm-int8).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots to this folder."),
    metrics: Path | None = typer.Option(
        None, "--metrics", help="A finetune metrics.jsonl to plot as training curves."
    ),
    graph: Path | None = typer.Option(
        None, "--graph", help="Write a picture of the graph (FILE.svg or FILE.html)."
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Run code the checkpoint names (a module:callable model, recipe imports).",
    ),
) -> None:
    """Measure a hybrid per region: ops, firing rates, gates and energy."""
    _check_outputs(checkpoint, json_out, plots, metrics, graph)
    with hybridize.trusting_code(trust_code):
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
    # the files first: a reader that stops early (`| head`) must not cost them
    written = []
    if json_out is not None:
        written.append(f"report: {report.save_json(json_out)}")
    if plots is not None:
        written += [f"plot: {p}" for p in hybridize.save_plots(report, plots, metrics)]
    if graph is not None:
        written.append(f"graph: {hybridize.render_graph(model, graph)}")
    console = Console()
    for table in _tables(report):
        console.print(table)
    for line in written:
        console.print(line)


def _check_outputs(
    checkpoint: Path, json_out: Path | None, plots: Path | None, metrics: Path | None,
    graph: Path | None,
) -> None:  # fmt: skip
    """Every output option, before the measurement: a mistake costs no run, and no file of
    the run is written when another cannot be."""
    if metrics is not None and plots is None:
        raise HybridizeError("--metrics FILE draws training curves into --plots DIR; give --plots")
    from hybridize.io import refuse_same_file  # torch: not at startup (--help)

    refuse_same_file(json_out, checkpoint, metrics)
    refuse_same_file(graph, checkpoint, metrics)
    output_file(json_out, "--json")
    output_file(graph, "--graph")
    if graph is not None:
        hybridize.check_graph_path(graph)
    output_folder(plots, "--plots")
    input_file(metrics, "--metrics")
    if plots is not None and importlib.util.find_spec("matplotlib") is None:
        raise HybridizeError("--plots needs matplotlib; pip install 'hybridize[plots]'")


def register(app: typer.Typer) -> None:
    """Add the `inspect` command to the application."""
    app.command("inspect")(_inspect)
