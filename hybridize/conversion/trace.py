"""Symbolic tracing that works on real model zoos, with errors that name the layer.

Leaves are: torch.nn's own layers (fx's default), the modules timm registers as not traceable,
the recipe's ``trace.leaf_modules``, and whatever the caller passes (the regions being
converted, so each is one ``call_module`` node). Functions timm registers as not traceable and
the recipe's ``trace.autowrap_functions`` are recorded as calls instead of being traced into.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from hybridize._util import first_line, fresh_attr
from hybridize.conversion.module_state import traced_state_restored
from hybridize.conversion.sample_norms import norm_act_twin, traced_as_calls
from hybridize.errors import ConversionError

# Modules whose forward reads ``self.training``; traced through, that flag would be frozen into
# the graph, so they stay leaves and decide at run time.
TRAINING_DEPENDENT_MODULES: tuple[str, ...] = (
    "timm.layers.DropPath",
    "timm.layers.DropBlock2d",
    "torchvision.ops.StochasticDepth",
)

# Functional dropout -> the module that reads the training flag at run time.
FUNCTIONAL_DROPOUT: dict[Callable, type[nn.Module]] = {
    F.dropout: nn.Dropout,
    F.dropout1d: nn.Dropout1d,
    F.dropout2d: nn.Dropout2d,
    F.dropout3d: nn.Dropout3d,
    F.alpha_dropout: nn.AlphaDropout,
    F.feature_alpha_dropout: nn.FeatureAlphaDropout,
}


def _training_dependent_classes() -> tuple[type, ...]:
    classes = []
    for path in TRAINING_DEPENDENT_MODULES:
        module_name, _, attr = path.rpartition(".")
        try:
            classes.append(getattr(importlib.import_module(module_name), attr))
        except (ImportError, AttributeError):  # pragma: no cover - optional across versions
            continue
    return tuple(classes)


def unfreeze_dropout(gm: fx.GraphModule) -> None:
    """Replace functional dropout calls (whose ``training`` was frozen at trace time) by
    dropout modules that follow ``gm.train()`` / ``gm.eval()``."""
    changed = False
    for node in list(gm.graph.nodes):
        module_cls = FUNCTIONAL_DROPOUT.get(node.target) if node.op == "call_function" else None
        if module_cls is None:
            continue
        p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
        name = fresh_attr(gm, "dropout_fn")
        gm.add_submodule(name, module_cls(p))
        with gm.graph.inserting_before(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        changed = True
    if changed:
        gm.recompile()


def _timm_notrace() -> tuple[set[type], set[Callable]]:
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:  # pragma: no cover - timm is a dependency
        return set(), set()
    return set(get_notrace_modules()), set(get_notrace_functions())


def resolve_dotted(path: str, what: str) -> object:
    """Import ``package.module.Name`` (or ``package.module:Name``).

    Recipes are data (they travel inside checkpoints), so unless the caller trusts code
    (:func:`hybridize.trusting_code`) a path resolves only in a module that is already
    imported, read from the module's namespace: nothing named by a recipe runs.
    """
    from hybridize._trust import code_trusted, refuse

    module_name, _, attr = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ConversionError(
            f"{what} {path!r} is not a dotted path; write it as 'package.module.Name'"
        )
    if not code_trusted():
        module = sys.modules.get(module_name)
        if module is None:
            raise refuse(f"{what} {path!r} asks to import module {module_name!r}")
        found = vars(module).get(attr)  # no module __getattr__ hook runs
        if found is None:
            raise ConversionError(
                f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}; "
                "check the spelling"
            )
        return found
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConversionError(
            f"{what} {path!r} cannot be imported ({exc}); check the spelling"
        ) from None


def _function(path: str, what: str) -> Callable[..., Any]:
    """:func:`resolve_dotted` for a path that must name a function."""
    found = resolve_dotted(path, what)
    if not callable(found):
        raise ConversionError(
            f"{what} {path!r} is a {type(found).__name__}, not a function; name a function"
        )
    return found


def class_matches(module: nn.Module, spec: str) -> bool:
    """True if ``spec`` names the module's class or one of its bases: by name, by its defining
    path, or by any dotted path a loaded module exports it under (``timm.layers.Mlp`` is
    defined in ``timm.layers.mlp``)."""
    exported = _exported_class(spec)
    if exported is not None:
        return isinstance(module, exported)
    for cls in type(module).__mro__:
        if spec in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
            return True
    return False


def _exported_class(spec: str) -> type | None:
    """The class a dotted ``spec`` names in a module already imported (nothing is imported
    and no module hook runs); None for a plain name or a path that names no class."""
    module_name, _, attr = spec.replace(":", ".").rpartition(".")
    module = sys.modules.get(module_name) if module_name else None
    found = vars(module).get(attr) if module is not None else None
    return found if isinstance(found, type) else None


class HybridTracer(fx.Tracer):
    """An fx tracer with configurable leaves: module instances, classes, and class names."""

    def __init__(
        self,
        leaf_names: Iterable[str] = (),
        leaf_classes: Iterable[str] = (),
        autowrap_functions: Iterable[Callable] = (),
    ) -> None:
        timm_modules, timm_functions = _timm_notrace()
        # per-sample statistics the twin rewrites (rule 5) stay calls
        calls = tuple(timm_functions) + traced_as_calls() + tuple(autowrap_functions)
        super().__init__(autowrap_functions=calls)
        self._leaf_names = set(leaf_names)
        self._leaf_classes = tuple(leaf_classes)
        self._timm_leaves = tuple(timm_modules) + _training_dependent_classes()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names:
            return True
        if self._timm_leaves and isinstance(m, self._timm_leaves):
            return True
        if norm_act_twin(m) is not None:  # a twin swaps it whole (twin rule 1)
            return True
        if any(class_matches(m, spec) for spec in self._leaf_classes):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def make_tracer(
    trace_settings: object | None = None, leaf_names: Iterable[str] = ()
) -> HybridTracer:
    """A tracer configured from a recipe's ``trace`` section (leaf_modules, autowrap_functions)."""
    leaf_classes = list(getattr(trace_settings, "leaf_modules", None) or [])
    autowrap = [
        _function(path, "trace.autowrap_functions entry")
        for path in (getattr(trace_settings, "autowrap_functions", None) or [])
    ]
    return HybridTracer(
        leaf_names=leaf_names, leaf_classes=leaf_classes, autowrap_functions=autowrap
    )


def _optional_args(model: nn.Module) -> dict[str, object] | None:
    """Forward parameters after the input that have defaults are fixed to them (e.g.
    ``attn_mask=None``), so the graph has one input and blocks see constants."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    fixed = {
        p.name: p.default
        for p in params
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return fixed or None


def opaque_classes(trace_settings: object | None = None) -> tuple[type, ...]:
    """Module classes fx will not look into: timm's not-traceable ones and the recipe's dotted
    leaf classes (plain class names cannot be resolved to a class and only act in the tracer)."""
    classes = set(_timm_notrace()[0])
    for spec in getattr(trace_settings, "leaf_modules", None) or []:
        if "." in spec:
            cls = resolve_dotted(spec, "trace.leaf_modules entry")
            if isinstance(cls, type):
                classes.add(cls)
    return tuple(classes)


def trace(
    model: nn.Module,
    tracer: HybridTracer,
    what: str = "model",
    concrete_args: dict[str, object] | None = None,
) -> fx.GraphModule:
    """Trace ``model``; a failure names the module being traced and suggests a leaf setting.

    ``concrete_args`` fixes forward arguments (default: every optional one to its default).
    """
    current: list[str] = []
    failed_in: list[str] = []  # the innermost module active when tracing failed
    original_call_module = tracer.call_module

    def call_module(m: nn.Module, forward: Callable, args: tuple, kwargs: dict):
        current.append(tracer.path_of_module(m))
        try:
            return original_call_module(m, forward, args, kwargs)
        except Exception:
            if not failed_in:
                failed_in.append(current[-1])
            raise
        finally:
            current.pop()

    tracer.call_module = call_module  # type: ignore[method-assign]
    # fx stores tensors created during tracing on the root (``_tensor_constant0``); the graph
    # module copies them, so they are taken off the traced model again: tracing the same model
    # twice must give the same names (a checkpoint's keys depend on them)
    attrs_before = set(model.__dict__)
    # caches that tracing filled with Proxies are emptied again (module_state)
    with traced_state_restored(model):
        try:
            fixed = _optional_args(model) if concrete_args is None else concrete_args
            graph = tracer.trace(model, concrete_args=fixed or None)
        except ConversionError:
            raise
        except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
            culprit = model.get_submodule(failed_in[0]) if failed_in else model
            where = f"{failed_in[0] if failed_in else what} ({type(culprit).__name__})"
            raise ConversionError(
                f"cannot trace {what}: in module {where}: {type(exc).__name__}: "
                f"{first_line(exc)}; make it a leaf: "
                f"'trace: {{leaf_modules: [{type(culprit).__name__}]}}' in the recipe"
            ) from exc
        finally:
            del tracer.call_module
        try:
            gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
        finally:
            for attr in set(model.__dict__) - attrs_before:
                delattr(model, attr)
    unfreeze_dropout(gm)
    return gm


SCALAR_META = "scalar_value"


def _is_scalar(value: object) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_scalar(v) for v in value)
    return isinstance(value, (bool, int, float))


def shape_propagate(
    gm: fx.GraphModule, example: torch.Tensor, given: tuple[int, ...] | None = None
) -> None:
    """Record each node's output shape in ``node.meta['tensor_meta']``, and plain Python
    numbers (a height read off a shape, a size tuple) in ``node.meta[SCALAR_META]`` (eval
    mode, no grad). A node that fails is one line naming it and its error (fx's ShapeProp
    would print a traceback first), and the shape the caller ``given`` (default the
    example's)."""
    from torch.fx.node import map_aggregate
    from torch.fx.passes.shape_prop import _extract_tensor_metadata

    class _Prop(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailed(n, exc) from exc
            tensors = []

            def tensor_meta(value: Any) -> Any:
                if not isinstance(value, torch.Tensor):
                    return value
                tensors.append(value)
                return _extract_tensor_metadata(value)

            meta = map_aggregate(result, tensor_meta)
            if tensors:  # as fx's ShapeProp records it
                n.meta["tensor_meta"] = meta
            n.meta["type"] = type(result)
            if _is_scalar(result):
                n.meta[SCALAR_META] = result
            return result

    try:
        with _evaluating(gm):
            _Prop(gm).run(example)
    except _NodeFailed as failed:
        node, exc = failed.node, failed.error
        where = f"{node.op} {node.target}" if node.op != "call_function" else node.name
        raise ConversionError(
            f"the traced model does not run on an example input of shape "
            f"{given or tuple(example.shape)}: "
            f"at {node.name!r} ({where}): {type(exc).__name__}: {first_line(exc)}; "
            "pass an example_input (or --img-size) the model accepts"
        ) from exc


def dim0_sizes(gm: fx.GraphModule, example: torch.Tensor, names: set[str]) -> dict[str, int]:
    """Dim 0 of the tensors the nodes ``names`` compute when ``gm`` runs on ``example`` (eval
    mode, no grad); empty when the model does not run on it (e.g. a batch it was fixed to)."""
    sizes: dict[str, int] = {}

    class _Sizes(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            result = super().run_node(n)
            if n.name in names and isinstance(result, torch.Tensor) and result.dim():
                sizes[n.name] = int(result.shape[0])
            return result

    try:
        with _evaluating(gm):
            _Sizes(gm).run(example)
    except Exception:
        return {}
    return sizes


@contextmanager
def _evaluating(gm: fx.GraphModule) -> Iterator[None]:
    """Eval mode and no grad for one run of ``gm``; its mode restored after."""
    was_training = gm.training
    gm.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        gm.train(was_training)


class _NodeFailed(Exception):
    """A node of the shape propagation raised ``error``."""

    def __init__(self, node: fx.Node, error: Exception) -> None:
        super().__init__(str(error))
        self.node, self.error = node, error
