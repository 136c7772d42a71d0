"""Splice: replace each selected region of the traced model by its fusion block or twin."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from hybridize.conversion.segment import extract
from hybridize.conversion.select import Region
from hybridize.conversion.trace import HybridTracer, trace
from hybridize.conversion.twin import TwinReport, build_twin
from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch


@dataclass
class RegionResult:
    """What happened to one region (a row of the plan)."""

    region: Region
    status: str  # "converted" or "skipped"
    reason: str = ""
    ann_params: int = 0
    twin_params: int = 0
    twin: TwinReport = field(default_factory=TwinReport)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _io_problem(ann: nn.Module, args: tuple, kwargs: dict, out_meta: object) -> str:
    """Why a call cannot host a twin ('' when it can): one tensor in, one tensor out.

    Extra arguments are accepted when they are constants equal to the forward's defaults
    (e.g. ``attn_mask=None``), since the fusion block calls ``ann(x)`` alone.
    """
    if not args or not isinstance(args[0], fx.Node):
        return "its first argument is not a tensor; a twin needs one tensor input"
    if not isinstance(args[0].meta.get("tensor_meta"), TensorMetadata):
        return "its input is not a single tensor (e.g. a list of feature maps)"
    if not isinstance(out_meta, TensorMetadata):
        return "its output is not a single tensor"
    try:
        params = list(inspect.signature(ann.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    defaults = {p.name: p.default for p in params}
    extras = dict(zip([p.name for p in params], args[1:], strict=False)) | dict(kwargs)
    for key, value in extras.items():
        if isinstance(value, fx.Node) or key not in defaults or defaults[key] != value:
            return (
                f"its call passes {key}={getattr(value, 'name', value)!r} besides the input; "
                "a twin needs exactly one tensor input"
            )
    return ""


def _gate_channels(out_meta: TensorMetadata, settings) -> int | None:
    if settings.gate_shape != "channel":
        return None
    shape = out_meta.shape
    return int(shape[1] if len(shape) >= 4 else shape[-1])


def build_region(
    region: Region,
    ann: nn.Module,
    call_args: tuple,
    call_kwargs: dict,
    out_meta: object,
    tracer_factory: Callable[[], HybridTracer],
) -> tuple[nn.Module | None, RegionResult]:
    """The replacement module for one region (None when skipped) and its plan row."""
    result = RegionResult(region=region, status="skipped", ann_params=_params(ann))
    s = region.settings
    if s.mode == "skip":
        result.reason = f"mode skip (target {region.target_index})"
        return None, result
    why = _io_problem(ann, call_args, call_kwargs, out_meta)
    if why:
        result.reason = why
        return None, result
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
        trace_fn=lambda m: trace(m, tracer_factory(), what=f"region {region.name}"),
    )
    result.twin = report
    if not report.activations:
        result.reason = "no activation inside to turn into a spiking neuron"
        return None, result
    branch = SpikingBranch(twin, encoder, decoder)
    result.twin_params = _params(branch)
    result.status = "converted"
    if s.mode == "replace":
        return branch, result
    fusion = FusionBlock(
        ann,
        branch,
        gate=s.gate,
        gate_init=s.gate_init_value(),
        gate_channels=_gate_channels(out_meta, s),
    )
    return fusion, result


def splice(
    gm: fx.GraphModule, regions: list[Region], tracer_factory: Callable[[], HybridTracer]
) -> list[RegionResult]:
    """Rewrite ``gm`` in place; returns one result per region, in graph order."""
    nodes = {n.name: n for n in gm.graph.nodes}
    module_nodes: dict[str, list[fx.Node]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            module_nodes.setdefault(n.target, []).append(n)
    results: list[RegionResult] = []
    replaced: dict[str, fx.Node] = {}  # exit node name -> the call that now computes it
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
            )
            if replacement is not None:
                gm.set_submodule(region.name, replacement)
                # the constants accepted by _io_problem equal the defaults; the fusion block
                # (or branch) takes the input alone
                node.args, node.kwargs = node.args[:1], {}
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
                name = _unique_attr(gm, region.name)
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


def _unique_attr(gm: nn.Module, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name = f"{base}_{i}"
        i += 1
    return name
