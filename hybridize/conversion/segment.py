"""Single-entry single-exit regions of an fx graph that are not one module (e.g. a stem)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from hybridize._util import is_within
from hybridize.errors import ConversionError


@dataclass(frozen=True)
class SegmentNodes:
    """Nodes (in graph order) computed from one entry value; the last node is the exit."""

    entry: str
    nodes: tuple[str, ...]

    @property
    def exit(self) -> str:
        return self.nodes[-1]

    @property
    def label(self) -> str:
        return f"{self.nodes[0]}..{self.exit}"


def find_node(graph: fx.Graph, ref: str) -> fx.Node:
    """A node by fx name (``layer1_0_conv1``) or by the module/function target it calls."""
    for node in graph.nodes:
        if node.name == ref or (node.op == "call_module" and node.target == ref):
            return node
    names = [n.target if n.op == "call_module" else n.name for n in graph.nodes]
    inside = [t for t in names if isinstance(t, str) and is_within(ref, t, strict=True)]
    if inside:
        raise ConversionError(
            f"segment endpoint {ref!r} lies inside module {inside[0]!r}, which is traced as one "
            "call (a tracing leaf, a region a later target selects, or a block kept whole to find "
            "where a stem target ends); select the modules inside it by name instead"
        )
    import difflib

    near = difflib.get_close_matches(ref, [str(n) for n in names], n=4, cutoff=0.5)
    hint = f"; closest: {', '.join(near)}" if near else ""
    raise MissingEndpoint(f"segment endpoint {ref!r} is not a node of the traced graph{hint}")


class MissingEndpoint(ConversionError):
    """A segment endpoint that names no node of the traced graph (a target that is not
    ``required`` then matches nothing, as any other selector)."""


def tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [n for n in node.all_input_nodes if n.op != "get_attr"]


def segment_between(graph: fx.Graph, entry: fx.Node, exit_: fx.Node) -> SegmentNodes:
    """The nodes on paths from ``entry`` to ``exit_``, checked to be single-entry single-exit."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    # descendants of entry
    down: set[fx.Node] = set()
    stack = list(entry.users)
    while stack:
        n = stack.pop()
        if n not in down and order[n] <= order[exit_]:
            down.add(n)
            stack.extend(n.users)
    # ancestors of exit among them
    members: set[fx.Node] = set()
    stack = [exit_]
    while stack:
        n = stack.pop()
        if n in down and n not in members:
            members.add(n)
            stack.extend(n.all_input_nodes)
    if exit_ not in members:
        raise ConversionError(
            f"segment {entry.name}..{exit_.name}: {exit_.name} does not depend on {entry.name}"
        )
    for n in members:
        for inp in tensor_inputs(n):
            if inp is not entry and inp not in members:
                raise ConversionError(
                    f"segment ending at {exit_.name} is not single-entry: {n.name} also reads "
                    f"{inp.name}; choose endpoints that enclose it"
                )
        if n is not exit_:
            for user in n.users:
                if user not in members:
                    raise ConversionError(
                        f"segment ending at {exit_.name} is not single-exit: {n.name} is also used "
                        f"by {user.name}; choose endpoints that enclose it"
                    )
    ordered = tuple(n.name for n in graph.nodes if n in members)
    return SegmentNodes(entry=entry.name, nodes=ordered)


def segment_from_endpoints(graph: fx.Graph, start: str, end: str) -> SegmentNodes:
    """The segment whose first node is ``start`` and last node is ``end``."""
    start_node = find_node(graph, start)
    end_node = find_node(graph, end)
    inputs = tensor_inputs(start_node)
    if len(inputs) != 1:
        raise ConversionError(
            f"segment {start}..{end}: {start} reads {len(inputs)} tensors; a segment must start at "
            "a node with one tensor input"
        )
    return segment_between(graph, inputs[0], end_node)


def extract(gm: fx.GraphModule, segment: SegmentNodes, name: str) -> fx.GraphModule:
    """A standalone GraphModule computing the segment from one placeholder."""
    nodes = {n.name: n for n in gm.graph.nodes}
    members = {nodes[name] for name in segment.nodes}
    sub = fx.Graph()
    x = sub.placeholder("x")
    env: dict[fx.Node, fx.Node] = {}
    for node_name in segment.nodes:
        node = nodes[node_name]
        for inp in node.all_input_nodes:
            if inp in env or inp in members:
                continue
            # the one outside value (the entry, possibly already rewritten) becomes the input
            env[inp] = sub.node_copy(inp, lambda n: env[n]) if inp.op == "get_attr" else x
        env[node] = sub.node_copy(node, lambda n: env[n])
    sub.output(env[nodes[segment.exit]])
    return fx.GraphModule(gm, sub, name)
