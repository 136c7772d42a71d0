"""Recipe -> regions: which parts of a model get a twin, with which settings.

Deny by default; targets are applied in order and the last target that selects a region (or an
overlapping one) wins. Within one name or type target, nested matches keep the outermost.

A later region inside an earlier one takes its part and leaves the earlier target the rest: an
earlier module region falls apart into its other children (level by level down to the later
region), an earlier segment into the single-entry single-exit runs of nodes around it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import fx, nn

from hybridize._util import is_within
from hybridize.conversion import discover
from hybridize.conversion.segment import (
    MissingEndpoint,
    SegmentNodes,
    segment_between,
    segment_from_endpoints,
)
from hybridize.conversion.trace import class_matches
from hybridize.errors import ConversionError, RecipeError
from hybridize.recipe import BlockSettings, Recipe
from hybridize.recipe.messages import closest_names, unmatched_target_error

MODULE_AUTO_KINDS = {
    "blocks": discover.find_blocks,
    "stages": discover.find_stages,
    "last-stage": discover.find_last_stage,
    "head": discover.find_head,
}


@dataclass
class Region:
    """One selected region: a module (by qualified name) or a graph segment."""

    name: str
    target_index: int
    selector: str
    settings: BlockSettings
    segment: SegmentNodes | None = None
    overrides: list[int] = field(default_factory=list)
    split_from: str = ""  # the earlier region this is the rest of, after a later target took part

    def rest(self, name: str, segment: SegmentNodes | None = None) -> Region:
        """A piece of this region left to its target when a later target took another part."""
        return Region(
            name=name,
            target_index=self.target_index,
            selector=self.selector,
            settings=self.settings,
            segment=segment,
            overrides=list(self.overrides),
            split_from=self.split_from or self.name,
        )

    @property
    def kind(self) -> str:
        return "segment" if self.segment is not None else "module"


def _outermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(is_within(n, o, strict=True) for o in names)]


def module_candidates(
    model: nn.Module, recipe: Recipe, index: int, opaque: tuple[type, ...] = ()
) -> list[str] | None:
    """Module names target ``index`` selects, or None when it selects graph segments."""
    select = recipe.targets[index].select
    named = [(n, m) for n, m in model.named_modules() if n]
    if select.kind == "name":
        hits = [n for n, _ in named if any(fnmatch.fnmatchcase(n, p) for p in select.patterns)]
        return _outermost(hits)
    if select.kind == "type":
        hits = [n for n, m in named if any(class_matches(m, p) for p in select.patterns)]
        return _outermost(hits)
    if select.kind == "auto" and select.auto in MODULE_AUTO_KINDS:
        found = MODULE_AUTO_KINDS[select.auto](model, opaque)
        if found or select.auto != "blocks":
            return found
        return None  # no block modules: `blocks` falls back to conv-groups on the graph
    return None


def graph_candidates(
    gm: fx.GraphModule, recipe: Recipe, index: int, blocks: list[str]
) -> list[SegmentNodes]:
    """Segments target ``index`` selects in the traced graph."""
    target = recipe.targets[index]
    select = target.select
    if select.segment is not None:  # the one key a selector sets
        ends = select.segment
        try:
            return [segment_from_endpoints(gm.graph, ends.start, ends.end)]
        except MissingEndpoint:
            if target.required:
                raise
            return []
    if select.auto == "stem":
        stem = discover.find_stem(gm, blocks)
        return [stem] if stem is not None else []
    # conv-groups, or blocks falling back to them
    return discover.find_conv_groups(gm)


def module_rest(model: nn.Module, outer: str, inner: str) -> list[str]:
    """The modules making up ``outer`` apart from ``inner`` (strictly inside it): at each level
    from ``outer`` down to ``inner``'s parent, the children that do not contain ``inner``."""
    rest: list[str] = []
    current = outer
    while current != inner:
        on_path = None
        for child, _ in model.get_submodule(current).named_children():
            full = f"{current}.{child}"
            if is_within(inner, full):
                on_path = full
            else:
                rest.append(full)
        if on_path is None:  # not reachable as a child (registered elsewhere): nothing to keep
            return rest
        current = on_path
    return rest


def segment_rest(gm: fx.GraphModule, segment: SegmentNodes, taken: set[str]) -> list[SegmentNodes]:
    """The runs of ``segment``'s nodes between the ``taken`` ones that are single-entry
    single-exit segments themselves (a run that is not stays ANN)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    runs: list[list[str]] = [[]]
    for name in segment.nodes:
        if name in taken:
            runs.append([])
        else:
            runs[-1].append(name)
    pieces = []
    for run in (r for r in runs if r):
        inputs = [n for n in nodes[run[0]].all_input_nodes if n.op != "get_attr"]
        if len(inputs) != 1:
            continue
        try:
            piece = segment_between(gm.graph, inputs[0], nodes[run[-1]])
        except ConversionError:
            continue
        if set(piece.nodes) == set(run):
            pieces.append(piece)
    return pieces


def _candidates_for_error(model: nn.Module, recipe: Recipe, index: int) -> list[str]:
    select = recipe.targets[index].select
    if select.kind == "type":
        return sorted({type(m).__name__ for m in model.modules()})
    return [n for n, _ in model.named_modules() if n]


def _refuse_dead_patterns(model: nn.Module, recipe: Recipe, index: int) -> None:
    """A required target's list of patterns where one matches nothing (a typo beside a pattern
    that works): one line naming that pattern."""
    select = recipe.targets[index].select
    if select.kind not in ("name", "type") or len(select.patterns) < 2:
        return
    named = [(n, m) for n, m in model.named_modules() if n]
    for pattern in select.patterns:
        if select.kind == "name":
            hit = any(fnmatch.fnmatchcase(n, pattern) for n, _ in named)
        else:
            hit = any(class_matches(m, pattern) for _, m in named)
        if not hit:
            close = closest_names(pattern, _candidates_for_error(model, recipe, index))
            hint = f"; closest names: {', '.join(close)}" if close else ""
            raise RecipeError(
                f"recipe {recipe.name!r}: target {index} ({select.describe()}): pattern "
                f"{pattern!r} matches nothing{hint}; fix it, drop it, or set required: false "
                "on that target"
            )


def select_module_regions(
    model: nn.Module, recipe: Recipe, opaque: tuple[type, ...] = ()
) -> tuple[list[Region], list[int]]:
    """Module regions after last-wins, and the indices of targets that select segments."""
    regions: list[Region] = []
    graph_targets: list[int] = []
    for index, target in enumerate(recipe.targets):
        names = module_candidates(model, recipe, index, opaque)
        if names is None:
            graph_targets.append(index)
            continue
        if not names and target.required:
            raise unmatched_target_error(recipe, index, _candidates_for_error(model, recipe, index))
        if target.required:
            _refuse_dead_patterns(model, recipe, index)
        settings = recipe.settings_for(index)
        for name in names:
            replaced = [r for r in regions if is_within(r.name, name)]
            outer = [r for r in regions if is_within(name, r.name, strict=True)]
            regions = [r for r in regions if r not in replaced and r not in outer]
            for r in outer:  # the earlier region keeps what the new one does not take
                regions += [r.rest(piece) for piece in module_rest(model, r.name, name)]
            replaced += outer
            regions.append(
                Region(
                    name=name,
                    target_index=index,
                    selector=target.select.describe(),
                    settings=settings,
                    overrides=sorted({r.target_index for r in replaced}),
                )
            )
    return regions, graph_targets


def _segment_name(segment: SegmentNodes, auto: str | None) -> str:
    if auto == "stem":
        return "stem"
    return f"{segment.nodes[0]}__{segment.exit}"


def add_segment_regions(
    gm: fx.GraphModule,
    recipe: Recipe,
    regions: list[Region],
    segments: dict[int, list[SegmentNodes]],
    taken_from: dict[SegmentNodes, set[int]] | None = None,
) -> list[Region]:
    """Merge the graph targets' ``segments`` (index -> segments of ``gm``; graph_candidates)
    with ``regions``, last wins. ``taken_from`` names, per segment, the earlier targets whose
    regions it took before this trace (open_regions)."""
    nodes = {n.name: n for n in gm.graph.nodes}
    module_of_node = {n.name: n.target for n in gm.graph.nodes if n.op == "call_module"}

    def covered_modules(region: Region) -> set[str]:
        if region.segment is None:
            return {region.name}
        return {module_of_node[n] for n in region.segment.nodes if n in module_of_node}

    def overlap(a: Region, b: Region) -> bool:
        if (
            a.segment is not None
            and b.segment is not None
            and set(a.segment.nodes) & set(b.segment.nodes)
        ):
            return True
        return any(
            is_within(x, y) or is_within(y, x)
            for x in covered_modules(a)
            for y in covered_modules(b)
        )

    def covers(region: Region, node: str) -> bool:
        if region.segment is not None:
            return node in region.segment.nodes
        target = module_of_node.get(node)
        return target is not None and overlap(region, Region(target, -1, "", region.settings))

    ordered = sorted(regions, key=lambda r: r.target_index)
    for index in sorted(segments):
        target = recipe.targets[index]
        if not segments[index] and target.required:
            raise unmatched_target_error(recipe, index, list(nodes))
        settings = recipe.settings_for(index)
        for segment in segments[index]:
            region = Region(
                name=_segment_name(segment, target.select.auto),
                target_index=index,
                selector=target.select.describe(),
                settings=settings,
                segment=segment,
                overrides=sorted((taken_from or {}).get(segment, ())),
            )
            # a later module target takes its part of this segment; the rest stays with this one
            later = [r for r in ordered if r.target_index > index and overlap(r, region)]
            pieces = [(region, segment)]
            if later:
                for r in later:
                    r.overrides = sorted({*r.overrides, index})
                taken = {n for n in segment.nodes if any(covers(r, n) for r in later)}
                pieces = [
                    (region.rest(_segment_name(p, None), p), p)
                    for p in segment_rest(gm, segment, taken)
                ]
            for piece, piece_segment in pieces:
                inside = set(piece_segment.nodes)
                # an earlier region inside this one is replaced; one around it keeps the rest
                replaced = [r for r in ordered if r.target_index < index and overlap(r, piece)]
                ordered = [r for r in ordered if r not in replaced]
                for r in replaced:
                    if r.segment is not None and not set(r.segment.nodes) <= inside:
                        rest = segment_rest(gm, r.segment, inside)
                        ordered += [r.rest(_segment_name(p, None), p) for p in rest]
                piece.overrides = sorted({*piece.overrides, *(r.target_index for r in replaced)})
                ordered.append(piece)
    return ordered
