"""How a module region is called: its side inputs and the shape of its output.

A region hosts a twin when its first argument is one tensor. Further arguments (rotary tables
passed as ``rope=``, ``feat_size``, masks, flags) are *side inputs*: the fusion block hands them
to the ANN block and to the twin alike. A side input computed from the model input's data (not
just its shape) or from its batch size (``cls_token.expand(x.shape[0], -1, -1)``) is
*batch-shaped*: the twin, which runs on ``[T*N, ...]``, sees it repeated T times along dim 0
(t-major, like the folded planes). Everything else (tables computed from parameters or buffers,
shapes other than the batch, constants) passes unchanged; constant containers (a list of
``(H, W)`` tuples) reach the twin as plain lists, tuples and dicts. A region that returns a
tuple or list gets its spiking path added to one item: the first tensor with the input's shape.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field

from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

# Reading these off a tensor gives its shape, not its data: what follows does not carry batch.
SHAPE_METHODS = frozenset({"size", "dim", "numel", "ndimension", "nelement"})
SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda"})


@dataclass(frozen=True)
class SideInput:
    """One argument of the call besides the input: where it sits and how the twin sees it."""

    key: int | str  # position in the call's args (1 = the first after the input) or kwarg name
    label: str  # the parameter name, for the plan
    fold: bool  # repeat T times along dim 0 for the twin
    graph_value: bool  # computed in the graph (else a constant baked into the twin's trace)


@dataclass
class CallSpec:
    """Side inputs of a region's call and the output item its spiking path adds to."""

    side: list[SideInput] = field(default_factory=list)
    out_index: int | None = None  # None: the output is one tensor
    out_size: int = 1  # number of items of a tuple / list output

    @property
    def twin_inputs(self) -> list[SideInput]:
        """The side inputs that are graph values, in the order the twin takes them."""
        return [s for s in self.side if s.graph_value]

    def constants(self, call_args: tuple, call_kwargs: dict) -> dict[int | str, object]:
        """The constant side inputs by key (they are fixed in the twin's trace)."""
        values = {**dict(enumerate(call_args)), **call_kwargs}
        return {s.key: plain(values[s.key]) for s in self.side if not s.graph_value}

    def note(self) -> str:
        parts = []
        graph = [s for s in self.side if s.graph_value]
        if graph:
            parts.append(
                "side inputs: "
                + ", ".join(f"{s.label} ({'folded over T' if s.fold else 'as is'})" for s in graph)
            )
        if self.out_index is not None:
            parts.append(
                f"tuple output: spiking adds to item {self.out_index}, "
                f"the other {self.out_size - 1} pass through from the ANN"
            )
        return "; ".join(parts)


def plain(value: object) -> object:
    """``value`` with fx's immutable lists and dicts (how a graph node holds its arguments)
    turned back into the plain ones the generated code passes at run time; a constant traced
    into the twin as an fx container would fail the twin's input-spec check on every call."""
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if type(value) is tuple:  # named tuples keep their type and fields
        return tuple(plain(v) for v in value)
    return value


def batch_dependent(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes that carry the batch of the graph's first input.

    Those computed from its data, and those computed from its batch size: ``x.shape[0]``,
    ``x.size(0)``, ``len(x)``, or a whole ``x.shape`` used as is. Other shape reads (H and W,
    the rank, the dtype) stop the chain.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return set()
    dependent = {placeholders[0]}
    shapes: set[fx.Node] = set()  # x.shape / x.size() of a dependent x
    for node in gm.graph.nodes:
        if node in dependent:
            continue
        if _reads_shape_only(node):
            source = node.args[0] if node.args else None
            if source in dependent:
                reads = _shape_read(node)
                if reads == "shape":
                    shapes.add(node)
                elif reads == "batch":
                    dependent.add(node)
            continue
        if node.target is operator.getitem and node.args[0] in shapes:
            if _covers_dim0(node.args[1], _rank(node.args[0].args[0])):
                dependent.add(node)
            continue
        if any(i in dependent or i in shapes for i in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _reads_shape_only(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target in (getattr, len):
        return node.target is len or (len(node.args) > 1 and node.args[1] in SHAPE_ATTRS)
    return False


def _shape_read(node: fx.Node) -> str:
    """'shape' for a whole shape, 'batch' for the batch size, '' for another shape fact."""
    if node.op == "call_function":
        if node.target is len:
            return "batch"
        return "shape" if node.args[1] == "shape" else ""
    if node.target == "size":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim is None:
            return "shape"
        return "batch" if _covers_dim0(dim, _rank(node.args[0])) else ""
    return ""


def _rank(node: object) -> int | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return len(meta.shape) if isinstance(meta, TensorMetadata) else None


def _covers_dim0(index: object, rank: int | None) -> bool:
    """Whether indexing the shape of a tensor of rank ``rank`` with ``index`` reads dim 0."""
    if isinstance(index, int):
        return index == 0 or (rank is not None and index == -rank)
    if isinstance(index, slice):
        if rank is not None:
            return 0 in range(rank)[index]
        return index.start in (None, 0) and (index.step is None or index.step > 0)
    return True  # an index computed in the graph: it may read the batch


def _param_names(ann: nn.Module, n_positional: int) -> list[str]:
    """Names of the parameters after the input, for labels (``argN`` when unknown)."""
    try:
        params = list(inspect.signature(ann.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names + [f"arg{i}" for i in range(len(names) + 1, n_positional + 1)]


def call_spec(
    ann: nn.Module,
    args: tuple,
    kwargs: dict,
    out_meta: object,
    batch_nodes: set[fx.Node],
    batch_size: int | None,
    other_batch: OtherBatch | None = None,
) -> CallSpec | str:
    """The call spec of one region, or why it cannot host a twin. ``other_batch`` (dim 0 of
    the batch-shaped side inputs at another batch size) tells a side input whose dim 0 only
    happens to be a multiple of ``batch_size`` from one that holds the batch."""
    if not args or not isinstance(args[0], fx.Node):
        return "its first argument is not a tensor; a twin needs one tensor input"
    in_meta = args[0].meta.get("tensor_meta")
    if not isinstance(in_meta, TensorMetadata):
        return "its input is not a single tensor (e.g. a list of feature maps)"
    spec = CallSpec()
    names = _param_names(ann, len(args) - 1)
    keyed = [(i, names[i - 1], v) for i, v in enumerate(args) if i > 0]
    keyed += [(k, k, v) for k, v in kwargs.items()]
    for key, label, value in keyed:
        if not _is_graph_value(value):
            spec.side.append(SideInput(key, label, fold=False, graph_value=False))
            continue
        nodes = nodes_in(value)
        fold = any(n in batch_nodes for n in nodes)
        meta = value.meta.get("tensor_meta") if isinstance(value, fx.Node) else None
        if fold and not (
            isinstance(meta, TensorMetadata)
            and len(meta.shape) > 0
            and (not batch_size or meta.shape[0] % batch_size == 0)
            and (other_batch is None or other_batch.scales(value, meta.shape[0], batch_size))
        ):
            return (
                f"its side input {label}={_describe(value)!r} depends on the model input but is "
                "not one tensor with the batch on dim 0; the twin cannot fold it over time"
            )
        spec.side.append(SideInput(key, label, fold=fold, graph_value=True))
    if isinstance(out_meta, TensorMetadata):
        return spec
    if isinstance(out_meta, (tuple, list)) and out_meta:
        tensors = [i for i, m in enumerate(out_meta) if isinstance(m, TensorMetadata)]
        same = [i for i in tensors if tuple(out_meta[i].shape) == tuple(in_meta.shape)]
        if not same:
            return (
                "its output is a tuple with no tensor of the input's shape "
                f"{tuple(in_meta.shape)}; the spiking path has no item to add to"
            )
        spec.out_index, spec.out_size = same[0], len(out_meta)
        return spec
    return "its output is not a tensor or a tuple of tensors"


@dataclass(frozen=True)
class OtherBatch:
    """Dim 0 of batch-shaped nodes (by name) when the model runs at ``batch`` instead."""

    batch: int
    dim0: dict[str, int]

    def scales(self, value: object, dim0: int, batch_size: int | None) -> bool:
        """Whether ``value``'s dim 0 (``dim0`` at ``batch_size``) grows with the batch."""
        name = getattr(value, "name", None)
        if not batch_size or name not in self.dim0:
            return True  # not measured: the multiple-of-the-batch check stands alone
        return self.dim0[name] * batch_size == dim0 * self.batch


def _is_graph_value(value: fx.node.Argument) -> bool:
    return bool(nodes_in(value))


def nodes_in(value: fx.node.Argument) -> list[fx.Node]:
    """The graph nodes inside an argument (a node, or containers holding nodes)."""
    found: list[fx.Node] = []

    def visit(node: fx.Node) -> fx.Node:
        found.append(node)
        return node

    fx.node.map_arg(value, visit)
    return found


def _describe(value: object) -> str:
    return getattr(value, "name", str(value))


def primary_output_meta(out_meta: object, spec: CallSpec) -> TensorMetadata:
    """The metadata of the output item the spiking path adds to (:func:`call_spec` found it)."""
    item = out_meta
    if spec.out_index is not None and isinstance(out_meta, (tuple, list)):
        item = out_meta[spec.out_index]
    if not isinstance(item, TensorMetadata):
        raise TypeError(f"output item {spec.out_index} is {type(item).__name__}, not a tensor")
    return item


def unfix_placeholders(gm: fx.GraphModule, param_names: list[str]) -> None:
    """Give the twin the call signature of the module it was traced from.

    fx keeps a placeholder for every argument fixed by ``concrete_args``, renamed (``scale`` ->
    ``scale_1``) and used only by an assertion that the caller passes the fixed value. The
    fusion block calls the twin exactly as the ANN block is called (same keywords, the values
    it was traced with), so the assertions go and each placeholder takes back its name.
    """
    asserts = {"_assert", "_assert_is_none"}
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, param_names, strict=False):
        if node.target == name:
            continue
        chain: set[fx.Node] = set()
        stack = list(node.users)
        while stack:
            n = stack.pop()
            if n not in chain:
                chain.add(n)
                stack.extend(n.users)
        for n in sorted(chain, key=order.__getitem__, reverse=True):
            is_check = getattr(n.target, "__name__", "") in asserts or n.target is operator.eq
            if not n.users and is_check:
                gm.graph.erase_node(n)
        node.target = name
    gm.graph.lint()
    gm.recompile()
