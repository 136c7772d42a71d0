"""Later graph targets inside earlier module regions: the last target wins there too.

A module region is traced as one call, so a later target found on the graph (a ``segment``,
``conv-groups``, the ``stem``) cannot see inside it. When a recipe has such a pair, the model is
first traced with those earlier regions opened; the graph targets are resolved on that trace;
each earlier region they reach into falls apart into the children they leave alone (level by
level, as for a later module target), and one they cover whole is replaced. The segments are
then carried over, node by node, to the final trace, in which the remaining regions are leaves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from torch import fx, nn

from hybridize._util import is_within
from hybridize.conversion.segment import SegmentNodes, segment_between, tensor_inputs
from hybridize.conversion.select import Region
from hybridize.errors import ConversionError

Segments = dict[int, list[SegmentNodes]]  # graph target index -> the segments it selects
Taken = dict[SegmentNodes, set[int]]  # segment -> the earlier targets it took a region from

_CALLS = ("call_module", "call_function", "call_method")


def regions_to_open(regions: Iterable[Region], graph_targets: Iterable[int]) -> list[Region]:
    """The module regions of targets that come before some graph target."""
    last = max(graph_targets, default=-1)
    return [r for r in regions if r.segment is None and r.target_index < last]


def module_path(node: fx.Node) -> str:
    """The qualified name of the innermost module whose code made ``node`` ("" at the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def split_regions(
    model: nn.Module, gm: fx.GraphModule, regions: list[Region], segments: Segments
) -> tuple[list[Region], Taken]:
    """``regions`` after the later graph targets' ``segments`` (found on ``gm``, traced with the
    earlier regions opened) took their part: a region they reach into keeps the children they
    leave alone, one they cover whole is gone. Also which targets each segment took from."""
    paths = {n.name: module_path(n) for n in gm.graph.nodes if n.op in _CALLS}
    kept: list[Region] = []
    taken_from: Taken = {}
    for region in regions:
        later = [s for g, ss in segments.items() if g > region.target_index for s in ss]
        if region.segment is not None or not later:
            kept.append(region)
            continue
        mine = {n for n, p in paths.items() if is_within(p, region.name)}
        taken: set[str] = set()
        for segment in later:
            hit = mine & set(segment.nodes)
            if hit:
                taken |= hit
                taken_from.setdefault(segment, set()).add(region.target_index)
        if not taken:
            kept.append(region)
        elif taken != mine:
            pieces = _untouched_children(model, region.name, mine, taken, paths)
            kept += [region.rest(piece) for piece in pieces]
    return kept, taken_from


def _untouched_children(
    model: nn.Module, name: str, mine: set[str], taken: set[str], paths: dict[str, str]
) -> list[str]:
    """The modules under ``name`` that no taken node lies in, descending into those that hold
    both taken and other nodes (the module's own code between its children stays ANN)."""
    pieces: list[str] = []
    for child, _ in model.get_submodule(name).named_children():
        full = f"{name}.{child}"
        inside = {n for n in mine if is_within(paths[n], full)}
        if not inside & taken:
            pieces.append(full)
        elif inside - taken:
            pieces += _untouched_children(model, full, inside, taken, paths)
    return pieces


def _node_keys(graph: fx.Graph) -> dict[fx.Node, tuple[str, str, str, int]]:
    """A name for each node that does not depend on which other modules are leaves: its module,
    what it calls, and how many such calls of that module came before it."""
    seen: Counter[tuple[str, str, str]] = Counter()
    keys = {}
    for node in graph.nodes:
        target = node.target
        what = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
        base = (module_path(node), node.op, f"{getattr(target, '__module__', '')}.{what}")
        keys[node] = (*base, seen[base])
        seen[base] += 1
    return keys


def carry_segments(
    src: fx.GraphModule, dst: fx.GraphModule, segments: Segments, taken_from: Taken
) -> tuple[Segments, Taken]:
    """``segments`` (and ``taken_from``) found on ``src``, expressed in the nodes of ``dst``."""
    src_keys = _node_keys(src.graph)
    dst_nodes = {key: node for node, key in _node_keys(dst.graph).items()}
    src_nodes = {n.name: n for n in src.graph.nodes}

    def carry(segment: SegmentNodes) -> SegmentNodes:
        members = [dst_nodes.get(src_keys[src_nodes[name]]) for name in segment.nodes]
        inputs = tensor_inputs(members[0]) if members[0] is not None else []
        if None in members or len(inputs) != 1:
            raise ConversionError(
                f"segment {segment.label} could not be found again once the earlier regions "
                "around it were leaves; select the modules inside them by name instead"
            )
        found = segment_between(dst.graph, inputs[0], members[-1])  # type: ignore[arg-type]
        if set(found.nodes) != {m.name for m in members if m is not None}:
            raise ConversionError(
                f"segment {segment.label} changed once the earlier regions around it were "
                "leaves; select the modules inside them by name instead"
            )
        return found

    carried = {s: carry(s) for ss in segments.values() for s in ss}
    return (
        {g: [carried[s] for s in ss] for g, ss in segments.items()},
        {carried[s]: targets for s, targets in taken_from.items()},
    )
