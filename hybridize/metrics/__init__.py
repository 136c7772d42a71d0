"""Inspect a hybrid: operation counts, firing rates, gates, energy, plots and a graph picture."""

from hybridize.conversion.regions import find_regions
from hybridize.metrics.energy import PRESETS, EnergyModel, energy_model
from hybridize.metrics.graph import render_graph
from hybridize.metrics.inspect import inspect
from hybridize.metrics.plots import (
    plot_energy,
    plot_firing_rates,
    plot_raster,
    plot_training_curves,
    save_plots,
)
from hybridize.metrics.report import LayerStats, RegionStats, Report

__all__ = [
    "PRESETS",
    "EnergyModel",
    "LayerStats",
    "RegionStats",
    "Report",
    "energy_model",
    "find_regions",
    "inspect",
    "plot_energy",
    "plot_firing_rates",
    "plot_raster",
    "plot_training_curves",
    "render_graph",
    "save_plots",
]
