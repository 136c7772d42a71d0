"""The spec of a model built outside :func:`hybridize.models.create`.

timm models are recognised from their own config (architecture and tag, ``num_classes``,
``in_chans``, ``drop_rate``...), torchvision classifiers from their class and head. A guess is
accepted only when the model it rebuilds has the same structure: the same modules with the same
plain attributes, and the same tensor names, shapes and dtypes. Anything else gets a
"base model required" record instead of a spec: its checkpoint loads with
``hybridize.load(path, base_model=MODULE)``.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hybridize.errors import ModelError
from hybridize.nets import anatomy

BASE_REQUIRED = "required"
# module attributes that do not change what the model computes from given weights
_IGNORED_ATTRIBUTES = frozenset({"training", "grad_checkpointing"})
# callables compared by their qualified name (functions, methods, classes)
_NAMED = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
# data-config entries of timm's pretrained_cfg that a rebuilt model must share
_CFG_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")
# timm constructor arguments recovered from same-named model attributes when they differ
_TIMM_ATTRIBUTE_KWARGS = ("drop_rate", "global_pool")


def is_spec(record: Any) -> bool:
    """Whether a recorded ``model`` entry is a spec that rebuilds the base (not a
    "base model required" record)."""
    return isinstance(record, dict) and bool(record.get("source")) and bool(record.get("name"))


def base_spec(model: nn.Module) -> dict[str, Any]:
    """``model.hybridize_spec``, else a recognised timm/torchvision spec, else a
    "base model required" record that says why. Never raises for an unknown model."""
    spec = getattr(model, "hybridize_spec", None)
    if isinstance(spec, dict):
        return spec
    try:
        return spec_of(model)
    except ModelError as exc:
        return required_record(model, str(exc))
    except Exception as exc:  # a module whose state or attributes cannot be read plainly
        return required_record(model, f"recognising it failed ({type(exc).__name__})")


def required_record(model: nn.Module | None, reason: str) -> dict[str, Any]:
    """The ``model`` entry of a checkpoint whose base must be given to ``load``."""
    cls = type(model) if model is not None else None
    name = f"{cls.__module__}.{cls.__qualname__}" if cls is not None else "unknown"
    return {"base_model": BASE_REQUIRED, "class": name, "reason": reason}


def spec_of(model: nn.Module) -> dict[str, Any]:
    """The spec ``{source, name, kwargs}`` that rebuilds ``model``'s architecture.

    Raises :class:`ModelError` (one line: why) when ``model`` is neither a timm nor a
    torchvision classifier, or was changed after it was built in a way a spec cannot express.
    """
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected an nn.Module, got {type(model).__name__}")
    module = type(model).__module__
    if module.startswith("timm."):
        return _timm_spec(model)
    if module.startswith("torchvision.models."):
        return _torchvision_spec(model)
    raise ModelError(
        f"{type(model).__qualname__} ({module}) was not built by hybridize.models.create, "
        "timm or torchvision, so no spec can rebuild it"
    )


# ---------------------------------------------------------------------------------------------
# structure


def structure(model: nn.Module) -> list[tuple[str, ...]]:
    """What a rebuild must reproduce: every module's class and plain attributes, every
    tensor's name, shape and dtype. Devices and values do not count."""
    rows: list[tuple[str, ...]] = []
    for name, m in model.named_modules():
        cls = type(m)
        rows.append(("module", name, f"{cls.__module__}.{cls.__qualname__}"))
        for attr, value in sorted(vars(m).items()):
            if attr in _IGNORED_ATTRIBUTES or attr.startswith("__"):
                continue
            where = f"{name}.{attr}".lstrip(".")
            if _plain(value):
                rows.append(("attribute", where, repr(value)))
            elif isinstance(value, _NAMED):  # an activation function kept as an attribute
                rows.append(("attribute", where, f"{value.__module__}.{value.__qualname__}"))
    for key, t in model.state_dict().items():
        if isinstance(t, torch.Tensor):
            rows.append(("tensor", key, f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"))
    return rows


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, tuple | list):
        return len(value) <= 16 and all(_plain(v) for v in value)
    return False


def first_difference(model: nn.Module, rebuilt: nn.Module) -> str | None:
    """Where ``rebuilt`` first differs from ``model`` (None: the same structure)."""
    a, b = structure(model), structure(rebuilt)
    index_a = {(kind, where): value for kind, where, value in a}
    index_b = {(kind, where): value for kind, where, value in b}
    for kind, where, value in a:
        other = index_b.get((kind, where))
        if other is None:
            return f"{kind} {where or '(root)'} is not in the rebuilt model"
        if other != value:
            return f"{kind} {where or '(root)'} is {_cut(value)} here, {_cut(other)} rebuilt"
    for kind, where, _ in b:
        if (kind, where) not in index_a:
            return f"the rebuilt model has {kind} {where or '(root)'}, this one does not"
    return None


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the factory's 'weights from' log line for trial builds."""
    import logging

    log = logging.getLogger("hybridize")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def _rebuild(spec: dict[str, Any], cpu: bool) -> nn.Module:
    """The model a checkpoint with ``spec`` rebuilds: on the meta device when the constructor
    allows (no memory, no init), else on the CPU when ``cpu``."""
    from hybridize.nets.factory import create_from_spec

    with _quiet():
        try:
            with torch.device("meta"):
                return create_from_spec(spec, trust_code=False)
        except Exception:  # constructors that read tensor values (.item()) need real tensors
            if not cpu:
                raise
            return create_from_spec(spec, trust_code=False)


def _matches(
    model: nn.Module, spec: dict[str, Any], cpu: bool = True
) -> tuple[nn.Module | None, str | None]:
    """(the rebuilt model, the first difference; None when it matches). A spec the
    constructor refuses gives (None, why)."""
    try:
        rebuilt = _rebuild(spec, cpu)
    except Exception as exc:
        return None, f"{spec['name']} with {spec['kwargs']} does not build ({type(exc).__name__})"
    return rebuilt, first_difference(model, rebuilt)


# ---------------------------------------------------------------------------------------------
# timm


def _timm_spec(model: nn.Module) -> dict[str, Any]:
    import timm
    from timm.models import get_pretrained_cfg

    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(arch, str) or not timm.is_model(arch):
        raise ModelError(
            f"timm model {type(model).__qualname__} has no pretrained_cfg naming a timm "
            "architecture, so no spec can rebuild it"
        )
    assert cfg is not None
    tag = cfg.get("tag")
    default = get_pretrained_cfg(arch)
    name = arch if not tag or (default is not None and default.tag == tag) else f"{arch}.{tag}"
    kwargs: dict[str, Any] = {}
    if isinstance(getattr(model, "num_classes", None), int):
        kwargs["num_classes"] = model.num_classes
    kwargs["in_chans"] = _in_chans(model)
    spec = {"source": "timm", "name": name, "kwargs": kwargs}
    rebuilt, diff = _matches(model, spec)
    if rebuilt is not None and diff is not None:
        recovered = _recovered_kwargs(model, rebuilt)
        if recovered:
            kwargs.update(recovered)
            rebuilt, diff = _matches(model, spec)
    if diff is None and rebuilt is not None:
        diff = _cfg_difference(cfg, getattr(rebuilt, "pretrained_cfg", None))
    if diff is not None:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(
            f"timm model {name} is not what timm.create_model({name!r}, {args}) builds "
            f"({diff}); it was built with other arguments or changed afterwards"
        )
    return spec


def _in_chans(model: nn.Module) -> int:
    """The input channels: the model's own record (timm keeps ``in_chans`` on most models),
    else the first conv's (a stem may sit after space-to-depth: the rebuild checks it)."""
    own = getattr(model, "in_chans", None)
    if isinstance(own, int):
        return own
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def _recovered_kwargs(model: nn.Module, rebuilt: nn.Module) -> dict[str, Any]:
    """Constructor arguments read back from the model where the default rebuild differs:
    same-named attributes (``drop_rate``, ``global_pool``) and the stochastic-depth rate."""
    out: dict[str, Any] = {}
    for key in _TIMM_ATTRIBUTE_KWARGS:
        mine, theirs = getattr(model, key, None), getattr(rebuilt, key, None)
        if _plain(mine) and mine is not None and mine != theirs:
            out[key] = mine
    mine_dp, theirs_dp = _drop_path_rate(model), _drop_path_rate(rebuilt)
    if mine_dp != theirs_dp:
        out["drop_path_rate"] = float(f"{mine_dp:.7g}")  # linspace's float32 end, as typed
    return out


def _drop_path_rate(model: nn.Module) -> float:
    """The largest stochastic-depth probability: timm's schedules end at ``drop_path_rate``."""
    rates = [getattr(m, "drop_prob", None) for m in model.modules()]
    return max((float(r) for r in rates if isinstance(r, float | int)), default=0.0)


def _cfg_difference(cfg: Any, rebuilt_cfg: Any) -> str | None:
    """A data-config entry (input size, mean, std...) the rebuilt model would not share."""
    if not isinstance(cfg, dict) or not isinstance(rebuilt_cfg, dict):
        return None
    for key in _CFG_KEYS:
        a, b = cfg.get(key), rebuilt_cfg.get(key)
        if _as_tuple(a) != _as_tuple(b):
            return f"pretrained_cfg {key} is {a!r} here, {b!r} rebuilt"
    return None


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------
# torchvision


def _torchvision_spec(model: nn.Module) -> dict[str, Any]:
    import torchvision

    cls = type(model)
    names = [
        n
        for n in torchvision.models.list_models(module=torchvision.models)
        if torchvision.models.get_model_builder(n).__module__ == cls.__module__
    ]
    if not names:
        raise ModelError(
            f"{cls.__qualname__} ({cls.__module__}) is not a torchvision classifier, so no "
            "spec can rebuild it"
        )
    conv = anatomy.first_conv(model)
    kwargs = {
        "num_classes": anatomy.num_classes(model),
        "in_chans": conv[1].in_channels if conv else 3,
    }
    last = None
    for name in names:
        spec = {"source": "torchvision", "name": name, "kwargs": dict(kwargs)}
        # meta builds only: a real build of every sibling (regnet_y_128gf...) costs too much
        rebuilt, diff = _matches(model, spec, cpu=False)
        if rebuilt is not None and diff is None:
            return spec
        if rebuilt is not None and type(rebuilt) is cls:
            last = f"closest {name}: {diff}" if last is None else last
    raise ModelError(
        f"torchvision {cls.__qualname__} matches none of {', '.join(names[:6])}"
        f"{'...' if len(names) > 6 else ''} with num_classes={kwargs['num_classes']}, "
        f"in_chans={kwargs['in_chans']} ({last or 'their builders do not run on the meta device'})"
    )
