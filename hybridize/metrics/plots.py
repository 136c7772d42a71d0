"""PNG plots of an inspection report and of a fine-tune metrics file (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path

from hybridize._atomic import atomic_path
from hybridize._util import read_json_lines
from hybridize.errors import HybridizeError
from hybridize.metrics.report import Report

CURVE_KEYS = (
    ("loss", ("train_loss", "eval_loss")),
    ("accuracy", ("train_acc", "eval_top1", "eval_top5")),
    ("learning rate", ("lr",)),
    ("throughput (images/s)", ("images_per_s",)),
)


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise HybridizeError(
            "plots need matplotlib; install it with `pip install hybridize[plots]`"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        fig.clf()
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def plot_firing_rates(report: Report, path: str | os.PathLike) -> Path:
    """Bar chart: measured firing rate (%) of every LIF layer that ran, coloured by region."""
    plt = _pyplot()
    layers = [layer for layer in report.layers if layer.rate is not None]
    if not layers:
        raise HybridizeError("plot_firing_rates: the report has no LIF layer that ran to plot")
    regions = list(dict.fromkeys(layer.region for layer in layers))
    cmap = plt.get_cmap("tab10")
    colours = {r: cmap(i % 10) for i, r in enumerate(regions)}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(layers) + 2), 4.5))
    ax.bar(
        range(len(layers)),
        [100 * (layer.rate or 0.0) for layer in layers],
        color=[colours[layer.region] for layer in layers],
    )
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([layer.name for layer in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("firing rate (% of neuron-steps that spike)")
    ax.set_xlabel("LIF layer")
    ax.set_title(f"Firing rate per LIF layer ({report.n_samples} images)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[r]) for r in regions]
    if len(regions) <= 20:
        ax.legend(handles, regions, title="region", fontsize=7, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def plot_energy(report: Report, path: str | os.PathLike) -> Path:
    """Grouped bars: energy per image of each region, ANN vs hybrid (twin split AC / MAC)."""
    plt = _pyplot()
    regions = report.regions
    if not regions:
        raise HybridizeError("plot_energy: the report has no spiking regions to plot")
    import numpy as np

    x = np.arange(len(regions))
    w = 0.38
    ann = [r.energy_ann_pj / 1e6 for r in regions]
    branch = [(r.ann_macs or 0.0) * report.e_mac_pj / 1e6 for r in regions]
    twin_mac = [r.twin_macs * report.e_mac_pj / 1e6 for r in regions]
    twin_ac = [r.twin_acs * report.e_ac_pj / 1e6 for r in regions]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(regions) + 2), 4.5))
    ax.bar(x - w / 2, ann, w, label="ANN (dense MACs)", color="#4c72b0")
    ax.bar(x + w / 2, branch, w, label="hybrid: ANN branch", color="#8fa8d6")
    ax.bar(x + w / 2, twin_mac, w, bottom=branch, label="hybrid: twin MACs", color="#dd8452")
    bottom = [a + b for a, b in zip(branch, twin_mac, strict=True)]
    ax.bar(x + w / 2, twin_ac, w, bottom=bottom, label="hybrid: twin ACs", color="#55a868")
    ax.set_xticks(x)
    ax.set_xticklabels([r.name for r in regions], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("energy per image (µJ)")
    ax.set_xlabel("region")
    ax.set_title(
        f"Energy per region, {report.energy_preset} "
        f"({report.e_mac_pj:g} pJ/MAC, {report.e_ac_pj:g} pJ/AC); "
        f"total ANN {report.energy_ann_pj / 1e6:.3g} µJ vs hybrid "
        f"{report.energy_hybrid_pj / 1e6:.3g} µJ",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, Path(path))


def plot_raster(report: Report, path: str | os.PathLike) -> Path:
    """Spike raster of one region for the first input: time step vs sampled neuron."""
    plt = _pyplot()
    if not report.raster or not report.raster["layers"]:
        raise HybridizeError("plot_raster: the report holds no spike raster (no LIF layers ran)")
    layers = report.raster["layers"]
    fig, axes = plt.subplots(
        len(layers), 1, figsize=(7, 1.2 + 1.6 * len(layers)), squeeze=False, sharex=True
    )
    for ax, layer in zip(axes[:, 0], layers, strict=True):
        spikes = layer["spikes"]  # [T][K]
        ts, ks = [], []
        for t, row in enumerate(spikes):
            for k, s in enumerate(row):
                if s:
                    ts.append(t)
                    ks.append(k)
        ax.scatter(ts, ks, marker="|", s=60, color="black", linewidths=1.2)
        ax.set_xlim(-0.5, len(spikes) - 0.5)
        ax.set_ylim(-1, len(spikes[0]))
        ax.set_ylabel("neuron (sampled)", fontsize=8)
        total = sum(map(sum, spikes))
        ax.set_title(
            f"{layer['name']}: {total} spikes in {len(spikes)} steps x {len(spikes[0])} neurons",
            fontsize=8,
        )
    axes[-1, 0].set_xlabel("time step t")
    axes[-1, 0].set_xticks(range(len(layers[0]["spikes"])))
    fig.suptitle(f"Spike raster of region {report.raster['region']!r}, first input", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path))


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a fine-tune metrics.jsonl file (blank lines skipped)."""
    return read_json_lines(path)


def _series(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """The (epoch, value) points of ``key``; a mapping value (the lr of each parameter group)
    gives one series per entry, named ``key/entry``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for i, r in enumerate(rows):
        value = r.get(key)
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(key if sub is None else f"{key}/{sub}", []).append(
                    (r.get("epoch", i), v)
                )
    return out


def plot_training_curves(metrics: str | os.PathLike | list[dict], path: str | os.PathLike) -> Path:
    """Loss, accuracy, learning rate and throughput per epoch; keys that are missing are skipped."""
    plt = _pyplot()
    rows = metrics if isinstance(metrics, list) else read_metrics(metrics)
    panels = [
        (title, {name: pts for k in keys for name, pts in _series(rows, k).items()})
        for title, keys in CURVE_KEYS
    ]
    panels = [(t, series) for t, series in panels if series]
    if not rows or not panels:
        raise HybridizeError(
            "plot_training_curves: no rows with train_loss/eval_top1/lr/... keys to plot"
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        for name, pts in series.items():
            ax.plot(*zip(*pts, strict=True), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def save_plots(
    report: Report, folder: str | os.PathLike, metrics: str | os.PathLike | None = None
) -> list[Path]:
    """Every plot the report supports, as PNG files in ``folder``; returns their paths."""
    out = Path(folder)
    written = []
    if metrics is not None:  # first: the one plot a bad input file can stop
        written.append(plot_training_curves(metrics, out / "training_curves.png"))
    if any(layer.rate is not None for layer in report.layers):
        written.append(plot_firing_rates(report, out / "firing_rates.png"))
    if report.regions:
        written.append(plot_energy(report, out / "energy.png"))
    if report.raster:
        written.append(plot_raster(report, out / "raster.png"))
    return written
