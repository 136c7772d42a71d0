"""Plots and the graph picture render to files (no visual asserts), atomically."""

from __future__ import annotations

import json

import pytest
import torch

from hybridize.errors import HybridizeError
from hybridize.metrics import inspect

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"
X = torch.rand(2, 4)


def _metrics(tmp_path, rows):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_all_plots(linear_hybrid, tmp_path):
    from hybridize.metrics.plots import save_plots

    rows = [
        {"epoch": e, "train_loss": 1.0 / (e + 1), "eval_top1": 0.5 + 0.1 * e, "lr": 0.1 / (e + 1)}
        for e in range(3)
    ]
    out = tmp_path / "plots"
    written = save_plots(inspect(linear_hybrid, X), out, _metrics(tmp_path, rows))
    names = sorted(p.name for p in written)
    assert names == ["energy.png", "firing_rates.png", "raster.png", "training_curves.png"]
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary files left
    for p in written:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_training_curves_plot_the_lr_of_each_group(tmp_path):
    """Runs record ``lr`` per parameter group (a mapping): one curve per group."""
    import warnings

    from hybridize.metrics.plots import _series, plot_training_curves

    rows = [{"epoch": e, "lr": {"ann": 0.1 / e, "spiking": 0.5 / e}} for e in (1, 2)]
    assert _series(rows, "lr") == {
        "lr/ann": [(1, 0.1), (2, 0.05)],
        "lr/spiking": [(1, 0.5), (2, 0.25)],
    }
    assert _series([{"lr": 0.3}, {"lr": True}], "lr") == {"lr": [(0, 0.3)]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty panel warns "No artists with labels"
        plot_training_curves(_metrics(tmp_path, rows), tmp_path / "c.png")


def test_a_torn_metrics_line_is_one_line(tmp_path):
    from hybridize.train import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "tra')
    with pytest.raises(HybridizeError, match=r"metrics.jsonl:2 is not valid JSON"):
        read_metrics(tmp_path)
    assert read_metrics(tmp_path / "none") == []


def test_training_curves_skip_missing_keys(tmp_path):
    from hybridize.metrics.plots import plot_training_curves

    path = _metrics(tmp_path, [{"epoch": 0, "eval_loss": 2.0}, {"epoch": 1, "eval_loss": 1.5}])
    assert plot_training_curves(path, tmp_path / "c.png").read_bytes()[:8] == PNG
    with pytest.raises(HybridizeError, match="no rows"):
        plot_training_curves(_metrics(tmp_path, [{"epoch": 0}]), tmp_path / "d.png")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(HybridizeError, match="bad.jsonl:2"):
        plot_training_curves(bad, tmp_path / "e.png")


def test_graph_svg_and_html(linear_hybrid, replace_model, tmp_path):
    from hybridize.metrics.graph import COLOURS, render_graph

    svg = render_graph(linear_hybrid, tmp_path / "g.svg").read_text()
    assert svg.startswith("<?xml") and "</svg>" in svg
    assert "0: FusionBlock" in svg and COLOURS["parallel"][0] in svg
    page = render_graph(replace_model, tmp_path / "g.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "0: SpikingBranch" in page and COLOURS["replace"][0] in page
    with pytest.raises(HybridizeError, match="use a .svg or .html"):
        render_graph(linear_hybrid, tmp_path / "g.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.html", "g.svg"]


def test_graph_layout_layers():
    import torch.fx

    from hybridize.metrics.graph import layout

    class Residual(torch.nn.Module):
        def forward(self, x):
            y = torch.relu(x)
            return x + y

    graph = torch.fx.symbolic_trace(Residual()).graph
    rows = {n.name: pos[0] for n, pos in layout(graph).items()}
    # x -> relu -> add: add sits below relu although x feeds it directly
    assert rows == {"x": 0, "relu": 1, "add": 2, "output": 3}
