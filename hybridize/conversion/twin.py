"""Build the spiking twin of a region: the same topology, activations replaced by LIF neurons.

The twin works on time-folded tensors ``[T*N, ...]``: stateless layers (conv, linear, norm,
pooling, add) run all T steps at once, and each LIF unfolds time internally. Rules, in order:

1. every activation module (also the ``act`` inside timm norm-act layers) becomes a LIF;
2. functional activations (``F.relu(x)``, ``x.relu()``, ...) become calls to new LIF modules;
3. pooling ``max-to-avg``: max pooling becomes average pooling (modules and functions);
4. residual ``sew``: an add whose only user is a LIF loses that LIF, and each operand that is not
   already a spike train (a LIF output or the encoded planes) gets its own LIF (METHOD.md s.1);
5. per-sample normalizations (``nn.GroupNorm``, ``F.group_norm``, ``F.normalize``, timm's
   EvoNorm statistics) take their statistics over the T time steps of a sample, not over one
   step; per-token norms (``layer_norm``, ``rms_norm``) stay per step, and in training a
   token silent at a step passes its gradient through them unchanged
   (:mod:`hybridize.conversion.sample_norms`; docs/conversion.md, "Per-sample
   normalizations");
6. ``twin_init: fresh`` re-initialises every layer (a norm the architecture zero-initialised
   stays zero); ``bn_momentum`` sets the twin's BN momentum.

A region that cannot be traced falls back to rule 1 alone (module surgery) and says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from torch import fx, nn

from hybridize._util import first_line, fresh_attr, is_within
from hybridize.conversion.activations import (
    ACTIVATION_METHODS,
    ADD_FUNCTIONS,
    ADD_METHODS,
    MAX_TO_AVG_FUNCTIONS,
    NORM_LAYERS,
    activation_name,
    is_activation_function,
    is_activation_module,
    max_to_avg_pool,
)
from hybridize.conversion.calls import nodes_in
from hybridize.conversion.drop_paths import drop_over_time
from hybridize.conversion.sample_norms import (
    PER_STEP_NORM_FUNCTIONS,
    norm_act_twin,
    norm_module_twin,
    sample_norm_functions,
)
from hybridize.spiking import LIF


@dataclass
class TwinReport:
    """What the twin construction changed (for plans and summaries)."""

    activations: list[str] = field(default_factory=list)  # converted, as "where: kind"
    pools: list[str] = field(default_factory=list)
    sew_adds: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)  # statistics over the T steps, as "where: op"
    step_norms: list[str] = field(default_factory=list)  # per step, silent-row rule
    traced: bool = True
    note: str = ""


@dataclass
class _Rules:
    """What every rewrite step needs: how to make a LIF, the pooling rule, and the report."""

    make_lif: Callable[[], LIF]
    pooling: str
    report: TwinReport
    time_steps: int


def build_twin(
    ann: nn.Module,
    *,
    time_steps: int,
    neuron_kwargs: dict,
    twin_init: str = "copy",
    pooling: str = "max-to-avg",
    residual: str = "sew",
    bn_momentum: float | None = None,
    trace_fn: Callable[[nn.Module], fx.GraphModule] | None = None,
    static_inputs: Collection[str] = (),
) -> tuple[nn.Module, TwinReport]:
    """Return ``(twin, report)``; ``ann`` itself is left untouched.

    ``static_inputs`` names forward arguments after the input that carry no batch (a rotary
    table, a shape): what is computed from them alone stays ANN, like a constant table.
    """
    report = TwinReport()
    rules = _Rules(lambda: LIF(**neuron_kwargs, time_steps=time_steps), pooling, report, time_steps)

    # fresh weights before tracing: a module fx traces through becomes a bare holder of its
    # parameters, without the reset_parameters that would re-initialise them
    source = copy.deepcopy(ann)
    kept: list[str] = _reinitialise(source) if twin_init == "fresh" else []
    twin: nn.Module
    if isinstance(source, fx.GraphModule):
        twin = source
    elif trace_fn is not None:
        try:
            twin = trace_fn(copy.deepcopy(source))
        except Exception as exc:  # untraceable region: module surgery only
            twin = source
            report.traced = False
            report.note = f"not traced ({first_line(exc, 120)}); module surgery only"
    else:
        twin = source
        report.traced = False

    free_nodes, free_modules = (
        _input_free(twin, static_inputs) if isinstance(twin, fx.GraphModule) else (set(), set())
    )
    _swap_modules(twin, rules, free_modules)
    if isinstance(twin, fx.GraphModule):
        _rewrite_functional(twin, rules, free_nodes)
        if residual == "sew":
            _apply_sew(twin, rules, free_nodes)
        twin.graph.lint()
        twin.delete_all_unused_submodules()
        twin.recompile()
    if report.norms:
        over = f"{len(report.norms)} per-sample norm(s) with statistics over the T steps"
        report.note = "; ".join(n for n in (report.note, over) if n)
    if kept:
        shown = ", ".join(kept[:3]) + (f" and {len(kept) - 3} more" if len(kept) > 3 else "")
        fresh = f"fresh twin keeps the ANN's values of {shown} (no initialiser)"
        report.note = "; ".join(n for n in (report.note, fresh) if n)
    if bn_momentum is not None:
        for m in twin.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum
    return twin, report


def spikes_reach_output(twin: nn.Module, out_index: int | None) -> bool:
    """Whether a spiking neuron of ``twin`` feeds the output item the branch decodes.

    Not when the block passes that item through unchanged (CoaT's parallel blocks return their
    first input as is and compute on the others): the spiking path would then add only the
    encoding's rounding, and no twin parameter would ever get a gradient. An untraced twin
    (module surgery only) is assumed to.
    """
    if not isinstance(twin, fx.GraphModule):
        return True
    modules = dict(twin.named_modules())
    output = next(n for n in reversed(twin.graph.nodes) if n.op == "output")
    value = output.args[0]
    if out_index is not None and isinstance(value, (tuple, list)):
        value = value[out_index]
    stack = nodes_in(value)
    seen: set[fx.Node] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "call_module" and any(
            isinstance(m, LIF) for m in modules[str(node.target)].modules()
        ):
            return True
        stack.extend(node.all_input_nodes)
    return False


def _input_free(
    gm: fx.GraphModule, static_inputs: Collection[str] = ()
) -> tuple[set[str], set[str]]:
    """Names of the nodes, and targets of the modules called, that do not depend on the
    region's input.

    They compute on parameters or constant tables (e.g. a relative-position MLP) with no
    batch dimension, so they must stay ANN: a LIF there would unfold a batch that is not there.
    A module called from both kinds of node counts as input-dependent.
    """
    dependent: set[fx.Node] = set()
    for node in gm.graph.nodes:
        seed = node.op == "placeholder" and node.target not in static_inputs
        if _reads_type_only(node):  # ``bias.to(x.dtype)`` is still a parameter
            continue
        if seed or any(i in dependent for i in node.all_input_nodes):
            dependent.add(node)
    free = [n for n in gm.graph.nodes if n not in dependent]
    called_on_input = {str(n.target) for n in dependent if n.op == "call_module"}
    free_modules = {str(n.target) for n in free if n.op == "call_module"} - called_on_input
    return {n.name for n in free}, free_modules


# attributes that say what kind of tensor it is, never which values or how many samples
_TYPE_ATTRIBUTES = frozenset({"dtype", "device", "layout", "is_cuda", "requires_grad"})


def _reads_type_only(node: fx.Node) -> bool:
    return (
        node.op == "call_function"
        and node.target is getattr
        and len(node.args) == 2
        and node.args[1] in _TYPE_ATTRIBUTES
    )


def _swap_modules(twin: nn.Module, rules: _Rules, static: Collection[str] = ()) -> None:
    report = rules.report
    for name, module in list(twin.named_modules()):
        if not name or any(is_within(name, s) for s in static):
            continue
        if is_activation_module(module):
            twin.set_submodule(name, rules.make_lif())
            report.activations.append(f"{name}: {activation_name(module)}")
        elif (swap := norm_act_twin(module)) is not None:
            make, statistic = swap
            twin.set_submodule(name, make(module, rules.make_lif(), rules.time_steps))
            report.activations.append(f"{name}: {type(module).__name__}")
            report.norms.append(f"{name}: {statistic}")
        elif (norm := norm_module_twin(module, rules.time_steps)) is not None:
            twin.set_submodule(name, norm)
            kind = report.norms if isinstance(module, nn.GroupNorm) else report.step_norms
            kind.append(f"{name}: {type(module).__name__}")
        elif (drop := drop_over_time(module, rules.time_steps)) is not None:
            twin.set_submodule(name, drop)
        elif rules.pooling == "max-to-avg":
            avg = max_to_avg_pool(module)
            if avg is not None:
                twin.set_submodule(name, avg)
                report.pools.append(f"{name}: {type(module).__name__} -> {type(avg).__name__}")


def _insert_lif(gm: fx.GraphModule, rules: _Rules, before: fx.Node, value: fx.Node) -> fx.Node:
    name = fresh_attr(gm, "lif")
    gm.add_submodule(name, rules.make_lif())
    with gm.graph.inserting_before(before):
        return gm.graph.call_module(name, (value,))


def _rewrite_functional(gm: fx.GraphModule, rules: _Rules, static: Collection[str] = ()) -> None:
    report = rules.report
    sample_norms = sample_norm_functions()
    for node in list(gm.graph.nodes):
        if node.name in static:
            continue
        is_fn = node.op == "call_function" and is_activation_function(node.target)
        is_method = node.op == "call_method" and node.target in ACTIVATION_METHODS
        if is_fn or is_method:
            lif_node = _insert_lif(gm, rules, node, node.args[0])
            node.replace_all_uses_with(lif_node)
            gm.graph.erase_node(node)
            kind = node.target if is_method else getattr(node.target, "__name__", str(node.target))
            report.activations.append(f"{node.name}: {kind}()")
        elif node.op == "call_function" and node.target in sample_norms:
            name = getattr(node.target, "__name__", str(node.target))
            node.target = sample_norms[node.target]
            node.kwargs = {**node.kwargs, "time_steps": rules.time_steps}
            report.norms.append(f"{node.name}: {name}")
        elif node.op == "call_function" and node.target in PER_STEP_NORM_FUNCTIONS:
            report.step_norms.append(f"{node.name}: {node.target.__name__}")
            node.target = PER_STEP_NORM_FUNCTIONS[node.target]
        elif (
            rules.pooling == "max-to-avg"
            and node.op == "call_function"
            and node.target in MAX_TO_AVG_FUNCTIONS
            and node.kwargs.get("dilation", node.args[4] if len(node.args) > 4 else 1)
            in (1, (1, 1))
        ):
            avg_fn = MAX_TO_AVG_FUNCTIONS[node.target]
            names = ("kernel_size", "stride", "padding")
            kwargs = {k: v for k, v in zip(names, node.args[1:4], strict=False)}
            kwargs.update(
                {k: v for k, v in node.kwargs.items() if k in (*names, "ceil_mode", "output_size")}
            )
            if "adaptive" in avg_fn.__name__:
                node.args = node.args[:2]
                node.kwargs = {k: v for k, v in node.kwargs.items() if k == "output_size"}
            else:
                node.args, node.kwargs = (node.args[0],), kwargs
            report.pools.append(f"{node.name}: {node.target.__name__} -> {avg_fn.__name__}")
            node.target = avg_fn


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and any(node.target is f for f in ADD_FUNCTIONS):
        return True
    return node.op == "call_method" and node.target in ADD_METHODS


def _is_lif_node(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return (
        node.op == "call_module"
        and isinstance(node.target, str)
        and isinstance(modules.get(node.target), LIF)
    )


def _apply_sew(gm: fx.GraphModule, rules: _Rules, static: Collection[str] = ()) -> None:
    modules = dict(gm.named_modules())
    planes = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)  # the spikes
    for node in list(gm.graph.nodes):
        if not _is_add(node) or len(node.users) != 1:
            continue
        post = next(iter(node.users))
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if not _is_lif_node(post, modules) or len(operands) != 2:
            continue
        if any(a.name in static for a in operands):  # adding a constant bias is no residual join
            continue
        post.replace_all_uses_with(node)
        gm.graph.erase_node(post)
        new_args = list(node.args)
        for i, arg in enumerate(node.args[:2]):
            if isinstance(arg, fx.Node) and not (arg is planes or _is_lif_node(arg, modules)):
                new_args[i] = _insert_lif(gm, rules, node, arg)
                modules = dict(gm.named_modules())
        node.args = tuple(new_args)
        rules.report.sew_adds.append(node.name)


def _reinitialise(module: nn.Module) -> list[str]:
    """Every layer's own default initialisation (``reset_parameters``, or
    ``nn.MultiheadAttention``'s ``_reset_parameters``), except a norm whose scale is exactly
    zero: that is the architecture's zero-init of a residual branch's last norm (timm's LeViT
    ``bn_weight_init=0``, ResNet ``zero_init_last``), which keeps the branch silent at the start;
    reset to 1 after sparse spikes it multiplied the branch's gradient by 1 / std of its input
    (LeViT: ~200x per block; docs/conversion.md, rule 6). Returns the parameters of modules
    with no initialiser (timm's LayerScale), which keep their values."""
    kept: list[str] = []
    for name, m in module.named_modules():
        if isinstance(m, LIF):
            continue
        weight = getattr(m, "weight", None) if isinstance(m, NORM_LAYERS) else None
        zero_init = weight if isinstance(weight, nn.Parameter) and not weight.any() else None
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
        else:
            own = [f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False)]
            kept += own
        if zero_init is not None:
            nn.init.zeros_(zero_init)  # the same Parameter: reset_parameters fills it in place
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return kept
