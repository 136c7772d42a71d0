"""``convert`` and ``plan``: the public face of the fx rewrite."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx, nn

from hybridize._util import example_shape, is_within, param_count
from hybridize.conversion import discover
from hybridize.conversion.module_state import copy_model
from hybridize.conversion.open_regions import carry_segments, regions_to_open, resolve_opened
from hybridize.conversion.rewrite import RegionResult, splice
from hybridize.conversion.segment import SegmentNodes
from hybridize.conversion.select import (
    Region,
    add_segment_regions,
    graph_candidates,
    select_module_regions,
)
from hybridize.conversion.trace import make_tracer, opaque_classes, shape_propagate, trace
from hybridize.errors import ConversionError
from hybridize.recipe import Recipe, load_recipe
from hybridize.spiking import FusionBlock, SpikingBranch

# Plain attributes of the base model that users of a classifier read (timm's data config,
# head and input sizes); the hybrid carries copies.
CARRIED_ATTRIBUTES: tuple[str, ...] = (
    "pretrained_cfg",
    "default_cfg",
    "num_classes",
    "in_chans",
    "num_features",
    "hybridize_spec",
)


class HybridModule(fx.GraphModule):
    """A converted model: an fx GraphModule that remembers how it was made.

    ``hybridize_meta`` (kept in ``self.meta`` so that deep copies keep it) holds the base model
    spec, the resolved recipe and the example input shape; checkpoints store it.
    """

    @property
    def hybridize_meta(self) -> dict[str, Any]:
        return self.meta.setdefault("hybridize", {})

    @hybridize_meta.setter
    def hybridize_meta(self, value: dict[str, Any]) -> None:
        self.meta["hybridize"] = value

    def __deepcopy__(self, memo: dict[int, Any]) -> HybridModule:
        # GraphModule's deepcopy keeps modules and meta but drops plain attributes
        res = super().__deepcopy__(memo)
        if not isinstance(res, HybridModule):  # torch copies into type(self); its stub says less
            raise TypeError(f"GraphModule.__deepcopy__ returned {type(res).__name__}")
        for attr in CARRIED_ATTRIBUTES:
            if attr in self.__dict__:
                setattr(res, attr, copy.deepcopy(self.__dict__[attr], memo))
        return res

    @property
    def conversion_plan(self) -> Plan | None:
        """The plan the conversion followed (per-region results and summary)."""
        return self.meta.get("hybridize_plan")


@dataclass
class Plan:
    """The resolved per-region table of a conversion, and its summary."""

    recipe: str
    rows: list[RegionResult]
    params_before: int
    params_after: int
    unconverted: list[tuple[str, str]] = field(default_factory=list)  # (where, why)

    @property
    def converted(self) -> list[RegionResult]:
        return [r for r in self.rows if r.status == "converted"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "regions": [
                {
                    "region": r.region.name,
                    "kind": r.region.kind,
                    "target": r.region.target_index,
                    "selector": r.region.selector,
                    "overrides": r.region.overrides,
                    "split_from": r.region.split_from,
                    "mode": r.region.settings.mode,
                    "status": r.status,
                    "reason": r.reason,
                    "time_steps": r.region.settings.time_steps,
                    "ann_params": r.ann_params,
                    "twin_params": r.twin_params,
                    "activations": r.twin_report.activations,
                    "pools": r.twin_report.pools,
                    "sew_adds": r.twin_report.sew_adds,
                    "norms": r.twin_report.norms,
                    "note": r.twin_report.note,
                }
                for r in self.rows
            ],
            "unconverted": [{"where": w, "why": y} for w, y in self.unconverted],
        }


def default_example(model: nn.Module, img_size: int | None = None) -> torch.Tensor:
    """Zeros of batch 1 the model accepts: the shape recorded at conversion, else timm's
    configured input size, else 224x224, with the model's input channels; ``img_size`` sets
    the height and width of an image shape."""
    return torch.zeros(example_shape(model, img_size))


def _unconverted(gm: fx.GraphModule, results: list[RegionResult]) -> list[tuple[str, str]]:
    """Activations of the top-level graph that stayed ANN-only, and why."""
    skipped = {r.region.name: r.reason for r in results if r.status != "converted"}
    modules = dict(gm.named_modules(remove_duplicate=False))
    found: list[tuple[str, str]] = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target in skipped:
            found.append((node.target, f"region skipped: {skipped[node.target]}"))
        elif discover.is_activation_node(node, modules):
            where = node.target if node.op == "call_module" else node.name
            found.append((str(where), "not in a selected region"))
        elif node.op == "call_module":
            module = modules[node.target]
            if not isinstance(module, (FusionBlock, SpikingBranch)) and discover.has_activation(
                module
            ):
                found.append((node.target, "inside a layer outside the selected regions"))
    return found


def _convert(
    model: nn.Module,
    recipe: Any,
    example_input: torch.Tensor | None,
    base_spec: dict[str, Any] | None = None,
) -> tuple[HybridModule, Plan]:
    recipe_obj: Recipe = load_recipe(recipe)
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert expects an nn.Module, got {type(model).__name__}")
    fused = sum(isinstance(m, (FusionBlock, SpikingBranch)) for m in model.modules())
    if fused:
        # a second conversion would give the twins twins of their own
        raise ConversionError(
            f"{type(model).__name__} is already a hybrid ({fused} spiking modules); convert the "
            "plain network (for a HAS-8 name: create_model(name, hybrid=False))"
        )
    # how a checkpoint rebuilds the base: given by the caller (hybridize.convert recognizes
    # models hybridize did not build), else the spec hybridize.models.create attached
    spec = base_spec if base_spec is not None else getattr(model, "hybridize_spec", None)
    model = copy_model(model)  # the caller's model is left as it is
    example = default_example(model) if example_input is None else example_input
    # shapes are learnt at a batch of 2 or more: at batch 1 every size is a multiple of the
    # batch, and a side input with its batch on another axis would pass as foldable over T
    probe = (
        example.repeat(2, *[1] * (example.dim() - 1))
        if example.dim() and len(example) == 1
        else example
    )
    params_before = param_count(model)

    opaque = opaque_classes(recipe_obj.trace)
    regions, graph_targets = select_module_regions(model, recipe_obj, opaque)
    blocks = discover.find_blocks(model, opaque)
    wants_stem = any(recipe_obj.targets[i].select.auto == "stem" for i in graph_targets)

    # later graph targets are resolved with the earlier module regions opened (open_regions)
    opened = regions_to_open(regions, graph_targets)

    def traced(regions: list[Region]) -> fx.GraphModule:
        # blocks are leaves only to delimit the stem, and never hide a region inside them (nor
        # what a later graph target found inside an opened region)
        hosts = {b for b in blocks if any(is_within(r.name, b, strict=True) for r in regions)}
        hosts |= {b for b in blocks for r in opened if is_within(r.name, b) or is_within(b, r.name)}
        stem_leaves = [b for b in blocks if b not in hosts] if wants_stem else []
        gm = trace(
            model, make_tracer(recipe_obj.trace, leaf_names=[r.name for r in regions] + stem_leaves)
        )
        shape_propagate(gm, probe, given=tuple(example.shape))
        return gm

    def tracer_factory():
        return make_tracer(recipe_obj.trace)

    def candidates(gm: fx.GraphModule, index: int) -> list[SegmentNodes]:
        return graph_candidates(gm, recipe_obj, index, blocks)

    if opened:
        regions, found = resolve_opened(model, regions, graph_targets, traced, candidates)
    gm = traced(regions)
    inner = _inner_regions_of_list_blocks(model, gm, recipe_obj, regions)
    if inner is not None:
        regions = inner
        gm = traced(regions)
    if opened:
        segments, taken_from = carry_segments(found, gm)
    else:
        segments, taken_from = {i: candidates(gm, i) for i in graph_targets}, {}
    regions = add_segment_regions(gm, recipe_obj, regions, segments, taken_from)
    # graph order: a module region by the node that calls it, a segment by its first node's
    # name (a segment may start at a call_module node too); regions never called go last
    by_name = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    by_module = {n.target: i for i, n in enumerate(gm.graph.nodes) if n.op == "call_module"}
    never = len(by_name)
    regions.sort(
        key=lambda r: (
            by_module.get(r.name, never)
            if r.segment is None
            else by_name.get(r.segment.nodes[0], never)
        )
    )

    # a batch of another size, coprime with the probe's: a side input whose dim 0 is only a
    # multiple of the probe's batch by chance (an even token count) does not grow with it
    other = probe[:1].repeat(len(probe) + 1, *[1] * (probe.dim() - 1)) if probe.dim() else None
    results = splice(gm, regions, tracer_factory, other)
    hybrid = HybridModule(gm, gm.graph, type(model).__name__)
    hybrid.train(model.training)
    for attr in CARRIED_ATTRIBUTES:  # data configs and sizes that timm/our loaders read
        if hasattr(model, attr) and not isinstance(getattr(model, attr), nn.Module):
            setattr(hybrid, attr, copy.deepcopy(getattr(model, attr)))
    hybrid.hybridize_meta = {
        "model": spec,
        "recipe": recipe_obj.to_dict(),
        "example_shape": list(example.shape),
    }
    conversion_plan = Plan(
        recipe=recipe_obj.name,
        rows=results,
        params_before=params_before,
        params_after=param_count(hybrid),
        unconverted=_unconverted(hybrid, results),
    )
    return hybrid, conversion_plan


def _inner_regions_of_list_blocks(
    model: nn.Module, gm: fx.GraphModule, recipe: Recipe, regions: list[Region]
) -> list[Region] | None:
    """``auto: blocks`` regions called with a list of tensors (DenseNet-style blocks that
    concatenate their inputs) cannot host a twin; their children that can take their place
    (discover.inner_hosts). None when there is no such block."""
    calls = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    out: list[Region] = []
    changed = False
    for r in regions:
        node = calls.get(r.name)
        if (
            r.segment is None
            and recipe.targets[r.target_index].select.auto == "blocks"
            and node is not None
            and node.args
            and isinstance(node.args[0], (list, tuple))
        ):
            inner = discover.inner_hosts(model, r.name)
            if inner:
                selector = f"{r.selector}: inside {r.name}, which takes a list"
                out += [replace(r, name=c, selector=selector) for c in inner]
                changed = True
                continue
        out.append(r)
    return out if changed else None


def convert(
    model: nn.Module,
    recipe: Any = "has8",
    example_input: torch.Tensor | None = None,
    *,
    base_spec: dict[str, Any] | None = None,
) -> HybridModule:
    """Give the regions ``recipe`` selects a spiking twin; the input model is not modified.

    ``recipe`` is a built-in name, a YAML path, a dict or a Recipe. ``example_input`` (default:
    the model's configured input size) is run once to learn shapes. ``base_spec`` is what a
    checkpoint stores to rebuild the base (default: the model's ``hybridize_spec``).
    """
    hybrid, conversion_plan = _convert(model, recipe, example_input, base_spec)
    if not conversion_plan.converted:
        rows = conversion_plan.rows[:3]
        reasons = "; ".join(f"{r.region.name}: {r.reason}" for r in rows) or "no region selected"
        raise ConversionError(
            f"recipe {conversion_plan.recipe!r} converted no region of {type(model).__name__} "
            f"({reasons}); check the plan with --dry-run and adjust the recipe targets"
        )
    hybrid.meta["hybridize_plan"] = conversion_plan
    return hybrid


def plan(model: nn.Module, recipe: Any = "has8", example_input: torch.Tensor | None = None) -> Plan:
    """The resolved per-region table of ``convert(model, recipe)``, without returning a model."""
    return _convert(model, recipe, example_input)[1]
