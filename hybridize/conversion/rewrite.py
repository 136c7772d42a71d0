"""Splice: replace each selected region of the traced model by its fusion block or twin."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from hybridize._util import fresh_attr, param_count
from hybridize.conversion.calls import (
    CallSpec,
    OtherBatch,
    batch_dependent,
    call_spec,
    nodes_in,
    primary_output_meta,
    unfix_placeholders,
)
from hybridize.conversion.divisors import input_divisions
from hybridize.conversion.segment import extract
from hybridize.conversion.select import Region
from hybridize.conversion.trace import HybridTracer, dim0_sizes, trace
from hybridize.conversion.twin import TwinReport, build_twin, spikes_reach_output
from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch


@dataclass
class RegionResult:
    """What happened to one region (a row of the plan)."""

    region: Region
    status: str  # "converted" or "skipped"
    reason: str = ""
    ann_params: int = 0
    twin_params: int = 0
    twin_report: TwinReport = field(default_factory=TwinReport)


def _gate_channels(out_meta: TensorMetadata, settings) -> int | None:
    if settings.gate_shape != "channel":
        return None
    shape = out_meta.shape
    return int(shape[1] if len(shape) >= 4 else shape[-1])


def _twin_trace_args(ann: nn.Module, spec: CallSpec, call_args: tuple, call_kwargs: dict):
    """(concrete_args, parameter names) for tracing the twin of a region called this way.

    The graph side inputs stay arguments; constants passed by the call and the defaults of
    the parameters it leaves out are fixed, so branches on them trace as the call runs.
    """
    try:
        params = list(inspect.signature(ann.forward).parameters.values())
    except (TypeError, ValueError):
        return None, []
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    graph = {s.label for s in spec.twin_inputs}
    constants = {
        (named[k].name if isinstance(k, int) and k < len(named) else k): v
        for k, v in spec.constants(call_args, call_kwargs).items()
    }
    fixed: dict[str, object] = {}
    for p in named[1:]:
        if p.name in graph:
            continue
        if p.name in constants:
            fixed[p.name] = constants[p.name]
        elif p.default is not inspect.Parameter.empty:
            fixed[p.name] = p.default
    return fixed, [p.name for p in named]


def _side_problem(ann: nn.Module, spec: CallSpec) -> str:
    """Graph side inputs must be named parameters of the block's forward ('' when they are)."""
    try:
        params = inspect.signature(ann.forward).parameters
    except (TypeError, ValueError):
        return ""
    for side in spec.twin_inputs:
        if side.label not in params:
            return (
                f"its side input {side.label!r} is not a named parameter of "
                f"{type(ann).__name__}.forward; a twin cannot be traced with it"
            )
    return ""


def build_region(
    region: Region,
    ann: nn.Module,
    call_args: tuple,
    call_kwargs: dict,
    out_meta: object,
    tracer_factory: Callable[[], HybridTracer],
    batch_nodes: set[fx.Node] | None = None,
    batch_size: int | None = None,
    other_batch: OtherBatch | None = None,
) -> tuple[nn.Module | None, RegionResult]:
    """The replacement module for one region (None when skipped) and its plan row."""
    result = RegionResult(region=region, status="skipped", ann_params=param_count(ann))
    s = region.settings
    if s.mode == "skip":
        result.reason = f"mode skip (target {region.target_index})"
        return None, result
    spec = call_spec(
        ann, call_args, call_kwargs, out_meta, batch_nodes or set(), batch_size, other_batch
    )
    if isinstance(spec, str):  # why the region cannot host a twin
        result.reason = spec
        return None, result
    why = _side_problem(ann, spec)
    if not why and s.mode == "replace" and spec.out_index is not None:
        why = "mode replace needs a single-tensor output (this block returns a tuple)"
    if why:
        result.reason = why
        return None, result
    divisions = input_divisions(ann, call_args, call_kwargs)
    if isinstance(divisions, list) and divisions:
        more = f" and {len(divisions) - 1} more" if len(divisions) > 1 else ""
        result.reason = (
            f"divides by a value computed from its input ({divisions[0]}{more}); in a twin that "
            "divisor is a sum of sparse spike trains, near 0, and its gradient near 1/eps"
        )
        return None, result
    fixed, param_names = _twin_trace_args(ann, spec, call_args, call_kwargs)

    def trace_twin(module: nn.Module) -> fx.GraphModule:
        gm = trace(module, tracer_factory(), what=f"region {region.name}", concrete_args=fixed)
        if fixed is not None:
            unfix_placeholders(gm, param_names)
        return gm

    encoder = BitPlaneEncoder(**s.encoder.kwargs())
    decoder = BitPlaneDecoder(**s.decoder.kwargs())
    twin, report = build_twin(
        ann,
        time_steps=encoder.time_steps,
        neuron_kwargs=s.neuron.kwargs(),
        twin_init=s.twin_init,
        pooling=s.pooling,
        residual=s.residual,
        bn_momentum=s.bn_momentum,
        trace_fn=trace_twin,
        static_inputs={side.label for side in spec.twin_inputs if not side.fold},
    )
    rest = f"rest of {region.split_from}" if region.split_from else ""
    unchecked = divisions if isinstance(divisions, str) else ""
    report.note = "; ".join(n for n in (rest, spec.note(), report.note, unchecked) if n)
    result.twin_report = report
    if not report.activations:
        result.reason = "no activation inside to turn into a spiking neuron"
        return None, result
    if not spikes_reach_output(twin, spec.out_index):
        item = "its output" if spec.out_index is None else f"output item {spec.out_index}"
        result.reason = (
            f"no spiking neuron of its twin feeds {item} (e.g. the block passes it through "
            "from its input); the spiking path would add only rounding and never learn"
        )
        return None, result
    fold = tuple(side.key for side in spec.side if side.fold)
    branch = SpikingBranch(twin, encoder, decoder, fold=fold, out_index=spec.out_index)
    result.twin_params = param_count(branch)
    result.status = "converted"
    if s.mode == "replace":
        return branch, result
    fusion = FusionBlock(
        ann,
        branch,
        gate=s.gate,
        gate_init=s.gate_init_value(),
        gate_channels=_gate_channels(primary_output_meta(out_meta, spec), s),
    )
    return fusion, result


def _side_inputs_at(
    gm: fx.GraphModule,
    example: torch.Tensor | None,
    regions: list[Region],
    module_nodes: dict[str, list[fx.Node]],
    batch_nodes: set[fx.Node],
) -> OtherBatch | None:
    """Dim 0 of the module regions' batch-shaped side inputs with the model run on ``example``
    (a batch of another size); None when there are none (the extra run is skipped)."""
    side: set[str] = set()
    for region in regions:
        calls = module_nodes.get(region.name, []) if region.segment is None else []
        for node in calls[:1]:
            values = [*node.args[1:], *node.kwargs.values()]
            side |= {n.name for v in values for n in nodes_in(v) if n in batch_nodes}
    if example is None or not side:
        return None
    return OtherBatch(len(example), dim0_sizes(gm, example, side))


def splice(
    gm: fx.GraphModule,
    regions: list[Region],
    tracer_factory: Callable[[], HybridTracer],
    other_example: torch.Tensor | None = None,
) -> list[RegionResult]:
    """Rewrite ``gm`` in place; returns one result per region, in graph order.
    ``other_example``: the input at another batch size than the shapes were recorded at, to
    check that batch-shaped side inputs hold the batch on dim 0 (calls.OtherBatch)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    module_nodes: dict[str, list[fx.Node]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            module_nodes.setdefault(n.target, []).append(n)
    results: list[RegionResult] = []
    replaced: dict[str, fx.Node] = {}  # exit node name -> the call that now computes it
    batch_nodes = batch_dependent(gm)
    first = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
    first_meta = first.meta.get("tensor_meta") if first is not None else None
    batch_size = int(first_meta.shape[0]) if isinstance(first_meta, TensorMetadata) else None
    other_batch = _side_inputs_at(gm, other_example, regions, module_nodes, batch_nodes)
    for region in regions:
        if region.segment is None:
            calls = module_nodes.get(region.name, [])
            if len(calls) != 1:
                # a module never called under this name (e.g. registered twice) is not in gm
                results.append(
                    RegionResult(
                        region=region,
                        status="skipped",
                        reason=f"called {len(calls)} times in the graph; a region must run once",
                    )
                )
                continue
            node = calls[0]
            replacement, result = build_region(
                region,
                gm.get_submodule(region.name),
                node.args,
                node.kwargs,
                node.meta.get("tensor_meta"),
                tracer_factory,
                batch_nodes,
                batch_size,
                other_batch,
            )
            if replacement is not None:  # called as before: the side inputs go to both paths
                gm.set_submodule(region.name, replacement)
        else:
            segment = region.segment
            exit_node = nodes[segment.exit]
            entry = replaced.get(segment.entry, nodes[segment.entry])
            ann = extract(gm, segment, "SegmentRegion")
            replacement, result = build_region(
                region,
                ann,
                (entry,),
                {},
                exit_node.meta.get("tensor_meta"),
                tracer_factory,
            )
            if replacement is not None:
                name = fresh_attr(gm, region.name, bare=True)
                region.name = name
                gm.add_submodule(name, replacement)
                with gm.graph.inserting_after(exit_node):
                    new = gm.graph.call_module(name, (entry,))
                new.meta = dict(exit_node.meta)
                exit_node.replace_all_uses_with(new)
                replaced[segment.exit] = new
                for node_name in reversed(segment.nodes):
                    gm.graph.erase_node(nodes[node_name])
        results.append(result)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return results
