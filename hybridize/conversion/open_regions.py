"""Later graph targets inside earlier module regions: the last target wins there too.

A module region is traced as one call, so a later target found on the graph (a ``segment``,
``conv-groups``, the ``stem``) cannot see inside it. When a recipe has such a pair, each graph
target is resolved on a trace of its own in which the module regions of earlier targets are
opened (traced through) and those of later targets stay leaves; each earlier region its
segments reach into falls apart into the children they leave alone (level by level, as for a
later module target), and one they cover whole is replaced. The segments are then carried over,
node by node, to the final trace, in which the remaining regions are leaves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import fx, nn

from hybridize._util import is_within
from hybridize.conversion.segment import SegmentNodes, segment_between, tensor_inputs
from hybridize.conversion.select import Region
from hybridize.errors import ConversionError

Taken = dict[SegmentNodes, set[int]]  # segment -> the earlier targets it took a region from

_CALLS = ("call_module", "call_function", "call_method")


@dataclass
class Found:
    """The segments graph target ``index`` selects, on the trace ``gm`` they were found on."""

    index: int
    gm: fx.GraphModule
    segments: list[SegmentNodes]
    taken_from: Taken


def regions_to_open(regions: Iterable[Region], graph_targets: Iterable[int]) -> list[Region]:
    """The module regions of targets that come before some graph target."""
    last = max(graph_targets, default=-1)
    return [r for r in regions if r.segment is None and r.target_index < last]


def resolve_opened(
    model: nn.Module,
    regions: list[Region],
    graph_targets: list[int],
    trace_with: Callable[[list[Region]], fx.GraphModule],
    candidates: Callable[[fx.GraphModule, int], list[SegmentNodes]],
) -> tuple[list[Region], list[Found]]:
    """Resolve each graph target on ``trace_with(leaves)`` with the module regions of earlier
    targets opened, splitting those regions as it goes. When they cannot be traced through,
    they stay one call each for that target (nothing inside a leaf is looked at)."""
    found = []
    traces: dict[tuple[str, ...], fx.GraphModule] = {}

    def traced(leaves: list[Region]) -> fx.GraphModule:
        key = tuple(r.name for r in leaves)
        if key not in traces:
            traces[key] = trace_with(leaves)
        return traces[key]

    for index in sorted(graph_targets):
        leaves = [r for r in regions if r.segment is not None or r.target_index > index]
        try:
            gm = traced(leaves)
        except ConversionError:
            if len(leaves) == len(regions):
                raise
            gm = traced(regions)
        segments = candidates(gm, index)
        regions, taken_from = split_regions(model, gm, regions, index, segments)
        found.append(Found(index, gm, segments, taken_from))
    return regions, found


def module_path(node: fx.Node) -> str:
    """The qualified name of the innermost module whose code made ``node`` ("" at the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def split_regions(
    model: nn.Module, gm: fx.GraphModule, regions: list[Region], index: int, segments: list
) -> tuple[list[Region], Taken]:
    """``regions`` after graph target ``index``'s ``segments`` (found on ``gm``) took their part
    of the earlier ones: a region they reach into keeps the children they leave alone, one they
    cover whole is gone. Also which targets each segment took from."""
    paths = {n.name: module_path(n) for n in gm.graph.nodes if n.op in _CALLS}
    kept: list[Region] = []
    taken_from: Taken = {}
    for region in regions:
        if region.segment is not None or region.target_index >= index:
            kept.append(region)
            continue
        mine = {n for n, p in paths.items() if is_within(p, region.name)}
        taken: set[str] = set()
        for segment in segments:
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


def _scope(node: fx.Node) -> str:
    """The module whose forward makes this call ("" at the root); a shared module is named by
    fx after its first registration, but its caller's scope is where the call is."""
    paths = [str(p) for p, _ in (node.meta.get("nn_module_stack") or {}).values()]
    if node.op == "call_module" and paths:
        paths = paths[:-1]
    return paths[-1] if paths else ""


def _node_keys(graph: fx.Graph) -> dict[fx.Node, tuple[str, str, str, int]]:
    """A name for each node that does not depend on which other modules are leaves: the scope
    it is called from, what it calls, and how many such calls that scope made before it."""
    seen: Counter[tuple[str, str, str]] = Counter()
    keys = {}
    for node in graph.nodes:
        target = node.target
        what = target if isinstance(target, str) else getattr(target, "__qualname__", repr(target))
        base = (_scope(node), node.op, f"{getattr(target, '__module__', '')}.{what}")
        keys[node] = (*base, seen[base])
        seen[base] += 1
    return keys


def carry_segments(
    found: list[Found], dst: fx.GraphModule
) -> tuple[dict[int, list[SegmentNodes]], Taken]:
    """The segments of ``found`` expressed in the nodes of ``dst`` (the final trace)."""
    carry = _Carrier(dst)
    segments: dict[int, list[SegmentNodes]] = {}
    taken_from: Taken = {}
    for f in found:
        segments[f.index] = []
        for segment in f.segments:
            piece = carry(f.gm, segment)
            segments[f.index].append(piece)
            if segment in f.taken_from:
                taken_from[piece] = f.taken_from[segment]
    return segments, taken_from


class _Carrier:
    """Finds a segment of another trace in ``dst``: node by node key, and a module that trace
    held as one call and ``dst`` traces through (a later graph target split it) by the nodes
    inside it."""

    def __init__(self, dst: fx.GraphModule) -> None:
        self.dst = dst
        self.by_key = {key: node for node, key in _node_keys(dst.graph).items()}
        self.order = {n: i for i, n in enumerate(dst.graph.nodes)}
        self.keys: dict[fx.Graph, dict[fx.Node, tuple[str, str, str, int]]] = {}

    def __call__(self, src: fx.GraphModule, segment: SegmentNodes) -> SegmentNodes:
        keys = self.keys.setdefault(src.graph, _node_keys(src.graph))
        nodes = {n.name: n for n in src.graph.nodes}
        members: set[fx.Node] = set()
        for name in segment.nodes:
            mapped = self._members(nodes[name], keys[nodes[name]])
            if not mapped:
                raise ConversionError(
                    f"segment {segment.label} could not be found again once the earlier regions "
                    "around it were leaves; select the modules inside them by name instead"
                )
            members.update(mapped)
        first = min(members, key=self.order.__getitem__)
        last = max(members, key=self.order.__getitem__)
        inputs = tensor_inputs(first)
        try:
            piece = segment_between(self.dst.graph, inputs[0], last) if len(inputs) == 1 else None
        except ConversionError:
            piece = None
        if piece is None or set(piece.nodes) != {m.name for m in members}:
            raise ConversionError(
                f"segment {segment.label} changed once the earlier regions around it were "
                "leaves; select the modules inside them by name instead"
            )
        return piece

    def _members(self, node: fx.Node, key: tuple[str, str, str, int]) -> list[fx.Node]:
        same = self.by_key.get(key)
        if same is not None:
            return [same]
        if node.op != "call_module":
            return []
        inside = str(node.target)
        return [n for n in self.order if n.op in _CALLS and is_within(module_path(n), inside)]
