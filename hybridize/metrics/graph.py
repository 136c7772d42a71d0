"""A picture of the hybrid's fx graph (SVG, or HTML with the SVG inline), regions coloured."""

from __future__ import annotations

import html
import os
from pathlib import Path

import torch.fx
from torch import nn

from hybridize._atomic import atomic_path
from hybridize._util import is_within
from hybridize.errors import HybridizeError

COLOURS = {  # fill, stroke
    "parallel": ("#fde0c5", "#d9822b"),  # FusionBlock: ANN + spiking twin
    "replace": ("#f8c4c4", "#c0392b"),  # SpikingBranch alone
    "ann": ("#d6e4f5", "#3b6fb6"),  # ordinary module
    "op": ("#eeeeee", "#888888"),  # functions and methods
    "io": ("#d5f0d5", "#3c8d3c"),  # inputs and outputs
}
LEGEND = (
    ("parallel", "spiking twin beside the ANN (FusionBlock)"),
    ("replace", "spiking twin replacing the ANN (SpikingBranch)"),
    ("ann", "ANN module"),
    ("op", "function / tensor method"),
    ("io", "input / output"),
)
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, LEGEND_H = 170, 28, 20, 44, 20, 52


def graph_of(model: nn.Module) -> torch.fx.Graph:
    """The model's fx graph; a plain module is traced with spiking regions as leaves."""
    if isinstance(model, torch.fx.GraphModule):
        return model.graph
    from hybridize.spiking import FusionBlock, SpikingBranch

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, (FusionBlock, SpikingBranch)) or super().is_leaf_module(
                m, qualname
            )

    try:
        return _Tracer().trace(model)
    except Exception as exc:
        raise HybridizeError(
            f"cannot draw the graph: torch.fx could not trace {type(model).__name__} ({exc}); "
            "draw a converted model (a GraphModule) instead"
        ) from exc


def _kind(node: torch.fx.Node, regions: dict[str, str]) -> str:
    if node.op in ("placeholder", "output", "get_attr"):
        return "io"
    if node.op != "call_module":
        return "op"
    target = str(node.target)
    for name, mode in regions.items():
        if is_within(target, name):
            return mode
    return "ann"


def layout(graph: torch.fx.Graph) -> dict[torch.fx.Node, tuple[int, int]]:
    """Layered layout: row = longest path from an input, column = order within the row."""
    depth: dict[torch.fx.Node, int] = {}
    for node in graph.nodes:  # fx nodes are in topological order
        depth[node] = 1 + max((depth[a] for a in node.all_input_nodes), default=-1)
    cols: dict[int, int] = {}
    pos = {}
    for node in graph.nodes:
        row = depth[node]
        pos[node] = (row, cols.get(row, 0))
        cols[row] = cols.get(row, 0) + 1
    return pos


def render_svg(model: nn.Module, title: str = "hybrid graph") -> str:
    """The SVG text of the model's graph."""
    from hybridize.conversion.regions import find_regions

    graph = graph_of(model)
    regions = {r.name: r.mode for r in find_regions(model)}
    modules = dict(model.named_modules())
    pos = layout(graph)
    width_cols = max((c for _, c in pos.values()), default=0) + 1
    rows = max((r for r, _ in pos.values()), default=0) + 1
    width = max(2 * MARGIN + width_cols * (BOX_W + GAP_X), 760)
    height = LEGEND_H + 2 * MARGIN + rows * (BOX_H + GAP_Y)

    def xy(node: torch.fx.Node) -> tuple[float, float]:
        r, c = pos[node]
        return MARGIN + c * (BOX_W + GAP_X), LEGEND_H + MARGIN + r * (BOX_H + GAP_Y)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{html.escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    x: float = MARGIN
    y = 12
    for kind, text in LEGEND:
        fill, stroke = COLOURS[kind]
        item_w = 30 + 6.6 * len(text)
        if x + item_w > width - MARGIN and x > MARGIN:  # wrap the legend
            x, y = MARGIN, y + 20
        parts.append(
            f'<rect x="{x}" y="{y}" width="14" height="14" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 18}" y="{y + 11}">{html.escape(text)}</text>'
        )
        x += item_w
    for node in graph.nodes:  # edges first, under the boxes
        x1, y1 = xy(node)
        for src in node.all_input_nodes:
            x0, y0 = xy(src)
            ax, ay, bx, by = x0 + BOX_W / 2, y0 + BOX_H, x1 + BOX_W / 2, y1
            mid = (ay + by) / 2
            parts.append(
                f'<path d="M{ax},{ay} C{ax},{mid} {bx},{mid} {bx},{by}" fill="none" '
                'stroke="#777" stroke-width="1" marker-end="url(#arrow)"/>'
            )
    parts.append(
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
    )
    for node in graph.nodes:
        kind = _kind(node, regions)
        fill, stroke = COLOURS[kind]
        x0, y0 = xy(node)
        target = (
            str(node.target)
            if node.op != "call_function"
            else getattr(node.target, "__name__", str(node.target))
        )
        tip = f"{node.name}: {node.op} {target}"
        label = node.name
        if node.op == "call_module" and target in modules:
            tip += f" ({type(modules[target]).__name__})"
            label = f"{target}: {type(modules[target]).__name__}"
        elif node.op in ("call_function", "call_method"):
            label = target
        label = label if len(label) <= 26 else label[:24] + ".."
        width_stroke = 2 if kind in ("parallel", "replace") else 1
        parts.append(
            f"<g><title>{html.escape(tip)}</title>"
            f'<rect x="{x0}" y="{y0}" width="{BOX_W}" height="{BOX_H}" rx="5" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width_stroke}"/>'
            f'<text x="{x0 + BOX_W / 2}" y="{y0 + BOX_H / 2 + 4}" text-anchor="middle">'
            f"{html.escape(label)}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def check_graph_path(path: str | os.PathLike) -> Path:
    """``path`` as a graph picture's destination: a ``.svg`` or ``.html`` file name, else
    one line (callers check it before the work that precedes the picture)."""
    dest = Path(path)
    if dest.suffix.lower() not in (".svg", ".html", ".htm"):
        raise HybridizeError(
            f"--graph {dest}: unknown picture format {dest.suffix!r}; use a .svg or .html file name"
        )
    return dest


def render_graph(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write the graph picture to ``path``: ``.svg`` as is, ``.html`` as a self-contained page."""
    dest = check_graph_path(path)
    suffix = dest.suffix.lower()
    svg = render_svg(model, title=f"{type(model).__name__} hybrid graph")
    if suffix == ".svg":
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + svg
    else:
        text = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(dest.stem)}</title></head><body>"
            f"<h3 style='font-family:sans-serif'>{html.escape(dest.stem)}: hybrid graph "
            "(hover a box for its op and module)</h3>"
            f"{svg}</body></html>\n"
        )
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest
