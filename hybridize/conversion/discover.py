"""``auto`` selectors: find the natural regions of a network whose class names nobody listed.

Module-structure rules (no tracing):

- a *container* is an ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict``;
- a *primitive* is a non-container layer defined by torch.nn itself (Conv2d, ReLU, ...);
- *block-like* is a non-container, non-primitive module holding two or more weighted layers;
- rule (a): the children of a container whose children are all block-like are blocks;
- rule (b): two or more block-like children of one class (under any module) are blocks, where
  rule (a) found nothing related;
- every other module of a class found that way is a block too, and nested blocks resolve to
  the innermost (so stages of blocks resolve to their blocks).

Graph rules (on the traced model): ``stem`` is the segment from the input to the first block;
``conv-groups`` are conv -> [norm] -> activation [-> pool] chains.
"""

from __future__ import annotations

from torch import fx, nn

from hybridize._util import is_within
from hybridize.conversion.activations import (
    ACTIVATION_METHODS,
    CONV_LAYERS,
    NORM_LAYERS,
    PASS_THROUGH_LAYERS,
    POOL_LAYERS,
    WEIGHTED_LAYERS,
    is_activation_function,
    is_activation_module,
)
from hybridize.conversion.segment import SegmentNodes, segment_between

CONTAINERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def is_container(module: nn.Module) -> bool:
    return isinstance(module, CONTAINERS)


def is_primitive(module: nn.Module) -> bool:
    return not is_container(module) and type(module).__module__.startswith("torch.nn")


def _weighted_layer_count(module: nn.Module) -> int:
    return sum(isinstance(m, WEIGHTED_LAYERS) for m in module.modules())


def _block_like(module: nn.Module) -> bool:
    return (
        not is_container(module) and not is_primitive(module) and _weighted_layer_count(module) >= 2
    )


def inner_hosts(model: nn.Module, block: str) -> list[str]:
    """The children of ``block`` that could host a twin in its place (a container or a custom
    module holding a weighted layer), for a block that cannot (its input is a list)."""
    return [
        f"{block}.{name}"
        for name, child in model.get_submodule(block).named_children()
        if not is_primitive(child) and _weighted_layer_count(child) >= 1
    ]


def _container_stage_children(module: nn.Module) -> list[nn.Module]:
    """Rule (a): children of a container whose children are all blocks (no layers, no containers)."""
    children = list(module.children())
    if is_container(module) and children and all(_block_like(c) for c in children):
        return [c for c in children if _block_like(c)]
    return []


def _repeated_children(module: nn.Module) -> list[nn.Module]:
    """Rule (b): two or more block-like children of one class."""
    counts: dict[type, list[nn.Module]] = {}
    for c in module.children():
        if _block_like(c):
            counts.setdefault(type(c), []).append(c)
    return [c for group in counts.values() if len(group) >= 2 for c in group]


def _innermost(names: list[str]) -> list[str]:
    return [n for n in names if not any(is_within(o, n, strict=True) for o in names)]


def _apply_rule(model: nn.Module, rule, opaque: tuple[type, ...]) -> list[str]:
    named = dict(model.named_modules())
    hidden = {n for n, m in named.items() if n and opaque and isinstance(m, opaque)}

    def visible(name: str) -> bool:
        return not any(is_within(name, h, strict=True) for h in hidden)

    classes = {type(c) for n, m in named.items() if visible(n) for c in rule(m)}
    return _innermost([n for n, m in named.items() if n and type(m) in classes and visible(n)])


def find_blocks(model: nn.Module, opaque: tuple[type, ...] = ()) -> list[str]:
    """Qualified names of the repeated blocks, in module order.

    Rule (a) (children of stage containers) decides where it finds blocks; rule (b) (repeated
    block-like children of any module) fills in the parts of the model rule (a) leaves empty.
    Modules of an ``opaque`` class (tracing leaves) are never looked into.
    """
    blocks = _apply_rule(model, _container_stage_children, opaque)
    extra = _apply_rule(model, _repeated_children, opaque)
    for name in extra:
        related = any(is_within(name, b) or is_within(b, name) for b in blocks)
        if not related:
            blocks.append(name)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(blocks, key=order.__getitem__)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def find_stages(model: nn.Module, opaque: tuple[type, ...] = ()) -> list[str]:
    """The parents of the blocks that run as one call, in module order: not the model itself,
    and not a ModuleList / ModuleDict (a container the forward loops over, never calls)."""
    stages: list[str] = []
    for block in find_blocks(model, opaque):
        parent = _parent(block)
        if not parent or isinstance(model.get_submodule(parent), (nn.ModuleList, nn.ModuleDict)):
            continue
        if parent not in stages:
            stages.append(parent)
    return stages


def find_last_stage(model: nn.Module, opaque: tuple[type, ...] = ()) -> list[str]:
    """The blocks of the deepest stage; for an isotropic network (one stage) the last block."""
    blocks = find_blocks(model, opaque)
    if not blocks:
        return []
    last_parent = _parent(blocks[-1])
    stage = [b for b in blocks if _parent(b) == last_parent]
    return stage if len(stage) < len(blocks) else blocks[-1:]


def find_head(model: nn.Module, opaque: tuple[type, ...] = ()) -> list[str]:
    """The classifier: timm's ``get_classifier()`` if present, else the last Linear."""
    names = {id(m): n for n, m in model.named_modules()}
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            head = get_classifier()
        except Exception:  # some models raise for exotic heads
            head = None
        if isinstance(head, nn.Module) and id(head) in names and names[id(head)]:
            return [names[id(head)]]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


# ---------------------------------------------------------------------- graph rules


def is_activation_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module" and isinstance(node.target, str):  # fx: a qualified name
        return is_activation_module(modules[node.target])
    if node.op == "call_function":
        return is_activation_function(node.target)
    if node.op == "call_method":
        return node.target in ACTIVATION_METHODS
    return False


def find_stem(gm: fx.GraphModule, block_names: list[str]) -> SegmentNodes | None:
    """From the input to the node that feeds the first block (None if there is no such node)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        return None

    def in_a_block(n: fx.Node) -> bool:
        # a call of a block (or of a leaf holding one), or a node of a block traced through
        if n.op == "call_module" and any(is_within(b, str(n.target)) for b in block_names):
            return True
        stack = [path for path, _ in (n.meta.get("nn_module_stack") or {}).values()]
        return any(is_within(str(p), b) for b in block_names for p in stack)

    first_block = next((n for n in gm.graph.nodes if in_a_block(n)), None)
    if first_block is None:
        return None
    feeds = [n for n in first_block.all_input_nodes if n.op != "get_attr"]
    if len(feeds) != 1 or feeds[0] is placeholders[0]:
        return None
    try:
        return segment_between(gm.graph, placeholders[0], feeds[0])
    except Exception:
        return None


def find_conv_groups(gm: fx.GraphModule) -> list[SegmentNodes]:
    """conv -> [norm] -> activation [-> pool] chains, each a segment."""
    modules = dict(gm.named_modules())
    groups: list[SegmentNodes] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], CONV_LAYERS):
            continue
        chain = [node]
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if nxt.op == "call_module" and isinstance(
                modules[nxt.target], (*NORM_LAYERS, *PASS_THROUGH_LAYERS)
            ):
                chain.append(nxt)
                cur = nxt
                continue
            break
        if len(cur.users) != 1:
            continue
        act = next(iter(cur.users))
        norm_act = cur.op == "call_module" and _has_nested_activation(modules[cur.target])
        if is_activation_node(act, modules):
            chain.append(act)
        elif not norm_act:
            continue
        last = chain[-1]
        if len(last.users) == 1:
            pool = next(iter(last.users))
            if pool.op == "call_module" and isinstance(modules[pool.target], POOL_LAYERS):
                chain.append(pool)
        inputs = [n for n in node.all_input_nodes if n.op != "get_attr"]
        if len(inputs) != 1:
            continue
        groups.append(segment_between(gm.graph, inputs[0], chain[-1]))
    return groups


def _has_nested_activation(module: nn.Module) -> bool:
    act = getattr(module, "act", None)
    return isinstance(act, nn.Module) and is_activation_module(act)


def has_activation(module: nn.Module) -> bool:
    return any(is_activation_module(m) for m in module.modules())


__all__ = [
    "find_blocks",
    "find_conv_groups",
    "find_head",
    "find_last_stage",
    "find_stages",
    "find_stem",
    "has_activation",
    "is_activation_node",
]
