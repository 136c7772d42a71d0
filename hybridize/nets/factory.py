"""Model names -> nn.Module with weights, recording the spec that rebuilds it.

Names: a timm name (``resnet18``, optionally ``timm:resnet18``), ``torchvision:NAME``, a Python
entry point ``package.module:callable``, or a HAS-8 reference name (``has8_vgg_b16``...). Each
source is a builder function registered with :func:`register_model_source`. A HAS-8 name builds
its ANN here; :func:`hybridize.models.create` converts it into the hybrid (``hybrid=True``).
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._util import first_line, load_exactly
from hybridize._util import in_chans as model_in_chans
from hybridize.errors import ModelError, WeightsError
from hybridize.nets import anatomy
from hybridize.nets import weights as W
from hybridize.nets.has8 import HAS8_MODELS, build_has8_ann
from hybridize.nets.request import BuildRequest

logger = logging.getLogger("hybridize")

ModelBuilder = Callable[[BuildRequest], tuple[nn.Module, str]]
"""A model source: a request (its name inside the source) -> (model, where its weights came
from)."""

# source name -> its builder (functions, never model instances); the keys are also the sources
# a checkpoint's spec may name (check_spec)
_SOURCES: dict[str, ModelBuilder] = {}
# the sources chosen by a "SOURCE:" prefix of the model name
_PREFIXED: set[str] = set()


def register_model_source(
    source: str, *, prefix: bool = True
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder as model source ``source``: ``create("SOURCE:NAME")``
    calls it with a :class:`BuildRequest` whose name is NAME, and checkpoints record
    ``{"source": SOURCE, "name": NAME, ...}``. The builder returns the model and where its
    weights came from (``"none (random init)"``, ``"file PATH"``...).

    ``prefix=False`` is for the built-in sources whose names carry no prefix (HAS-8 names and
    ``module:callable`` entry points, told apart by :func:`_parse`). Registering a source is
    trusting its code: a checkpoint naming it runs the builder when loaded.
    """

    def register(builder: ModelBuilder) -> ModelBuilder:
        if not source.isidentifier() or source in _SOURCES:
            raise ValueError(f"model source {source!r} is not a new identifier")
        _SOURCES[source] = builder
        if prefix:
            _PREFIXED.add(source)
        return builder

    return register


def _parse(name: str) -> tuple[str, str]:
    """(source, name within the source): HAS-8 names, then a registered "SOURCE:" prefix, then
    ``module:callable`` entry points; a bare name is a timm name."""
    if name in HAS8_MODELS:
        return "has8", name
    head, sep, rest = name.partition(":")
    if sep and head in _PREFIXED:
        return head, rest
    if sep:
        return "entrypoint", name
    return "timm", name


def _full_name(source: str, name: str) -> str:
    return f"{source}:{name}" if source in _PREFIXED else name


def create(request: BuildRequest) -> nn.Module:
    """The plain network of ``request``, by its source's builder; the internal half of
    :func:`hybridize.models.create` (which documents the arguments and builds the hybrid of a
    HAS-8 name: here such a name needs ``hybrid=False``). ``model.hybridize_spec`` records how
    to rebuild it.
    """
    source, model_name = _parse(request.name)
    check_sizes(request.num_classes, request.in_chans)
    for key in request.kwargs:  # they would bypass the weights checks, and no spec could hold them
        if _loads_files(key):
            raise ModelError(
                f"model argument {_short(key)} would load files or weights outside hybridize's "
                "checks; pass weights=PATH (--weights FILE) or pretrained=True instead"
            )
    model, where = _SOURCES[source](replace(request, name=model_name))
    logger.info("model %s (%s): weights from %s", model_name, source, where)
    spec = getattr(model, "hybridize_spec", None)
    if not isinstance(spec, dict):
        kw = _spec_kwargs(model, request.kwargs, request.in_chans)
        spec = {"source": source, "name": model_name, "kwargs": kw}
    spec["weights_source"] = where
    record_spec(model, spec)
    return model


def check_sizes(num_classes: Any, in_chans: Any) -> None:
    """Refuse a ``num_classes`` or ``in_chans`` that is not a count (None: keep the model's)."""
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 0):
        raise ModelError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    if in_chans is not None and (not isinstance(in_chans, int) or in_chans < 1):
        raise ModelError(f"in_chans must be a positive integer, got {in_chans!r}")


def recorded_spec(model: nn.Module) -> dict[str, Any]:
    """The spec :func:`create` attached to ``model`` (its ``hybridize_spec``)."""
    spec = vars(model).get("hybridize_spec")
    if not isinstance(spec, dict):
        raise ModelError(f"{type(model).__name__} carries no hybridize_spec; build it with create")
    return spec


def record_spec(model: nn.Module, spec: dict[str, Any]) -> None:
    """Attach ``spec`` (source, name, kwargs, weights_source) as ``model.hybridize_spec``."""
    model.hybridize_spec = spec  # type: ignore[assignment]  # a plain attribute


def create_from_spec(spec: Any, trust_code: bool | None = None) -> nn.Module:
    """Rebuild the base (unconverted, randomly initialised) model of a recorded spec.

    A spec usually comes from a file, so it is checked as untrusted data first: a known source
    whose name parses back to it, kwargs that are plain JSON values and name no file, URL or
    weights. An entry point (``module:callable``) runs only with ``trust_code=True`` (None: as
    set by :func:`hybridize.trusting_code`); otherwise :class:`UntrustedCodeError`.
    """
    from hybridize._trust import code_trusted, refuse

    source, name, kwargs = check_spec(spec)
    trusted = code_trusted() if trust_code is None else trust_code
    if source == "entrypoint" and not trusted:
        raise refuse(f"the model spec names the Python entry point {name!r}")
    full = _full_name(source, name)
    if source == "has8":
        kwargs["hybrid"] = False  # checkpoints store the ANN spec; the recipe makes the hybrid
        kwargs.pop("recipe", None)
    num_classes, in_chans = kwargs.pop("num_classes", None), kwargs.pop("in_chans", None)
    request = BuildRequest(full, num_classes=num_classes, in_chans=in_chans, kwargs=kwargs)
    try:
        return create(request)
    except (ModelError, WeightsError):
        raise
    except Exception as exc:  # a constructor refusing recorded kwargs: TypeError, ValueError...
        raise ModelError(
            f"cannot rebuild model {name!r} from its spec ({type(exc).__name__}: "
            f"{first_line(exc, 160)}); the spec does not fit this model"
        ) from None


# kwargs a spec may not carry: they would make a rebuild read files or reach the network
_FILE_WORDS = frozenset(
    {"pretrained", "checkpoint", "weights", "file", "url", "cache", "hub", "dir", "root"}
)
_MAX_KWARG_DEPTH = 6
_MAX_KWARG_ITEMS = 256
_MAX_STR = 256


def check_spec(spec: Any) -> tuple[str, str, dict[str, Any]]:
    """(source, name, kwargs) of a recorded model spec, validated as untrusted data."""
    if not isinstance(spec, dict):
        raise ModelError(
            f"the model spec must be a mapping with source, name, kwargs (got "
            f"{type(spec).__name__})"
        )
    source, name, kwargs = spec.get("source"), spec.get("name"), spec.get("kwargs")
    if not isinstance(source, str) or source not in _SOURCES:
        raise ModelError(
            f"unknown model spec source {_short(source)}; expected one of {sorted(_SOURCES)}"
        )
    if (
        not isinstance(name, str)
        or not name
        or len(name) > _MAX_STR
        or _parse(_full_name(source, name))[0] != source
    ):
        raise ModelError(f"model spec name {_short(name)} is not a valid {source} model name")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ModelError(f"model spec kwargs must be a mapping (got {type(kwargs).__name__})")
    problem = _plain_data(kwargs, 0, [0])
    if problem:
        raise ModelError(f"model spec kwargs: {problem}; a spec holds plain JSON values only")
    for key in kwargs:
        if _loads_files(key):
            raise ModelError(
                f"model spec kwarg {_short(key)} could load files or weights at rebuild; "
                "a spec may not set it"
            )
    return source, name, dict(kwargs)


def _loads_files(key: str) -> bool:
    """Whether a constructor argument named ``key`` could read files or fetch weights."""
    return bool(_FILE_WORDS.intersection(re.split(r"[_\W]+", key.lower())))


def _plain_data(value: Any, depth: int, count: list[int]) -> str | None:
    """Why ``value`` is not small plain JSON data (None if it is)."""
    count[0] += 1
    if count[0] > _MAX_KWARG_ITEMS or depth > _MAX_KWARG_DEPTH:
        return f"more than {_MAX_KWARG_ITEMS} values or {_MAX_KWARG_DEPTH} levels"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} is not a finite number"
    if isinstance(value, str):
        return None if len(value) <= _MAX_STR else f"a string longer than {_MAX_STR} characters"
    if isinstance(value, list):
        return next((p for v in value if (p := _plain_data(v, depth + 1, count))), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or len(k) > _MAX_STR:
                return f"key {_short(k)} is not a short string"
            problem = _plain_data(v, depth + 1, count)
            if problem:
                return problem
        return None
    return f"{type(value).__name__} is not a JSON value"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _spec_kwargs(
    model: nn.Module, kwargs: Mapping[str, Any], in_chans: int | None
) -> dict[str, Any]:
    out = dict(kwargs)
    out["num_classes"] = anatomy.num_classes(model)
    out["in_chans"] = in_chans if in_chans is not None else model_in_chans(model)
    try:
        json.dumps(out)
    except TypeError:
        bad = [k for k, v in kwargs.items() if not _json_ok(v)]
        raise ModelError(
            f"constructor arguments {bad} are not JSON values, so a checkpoint could not rebuild "
            "the model; pass numbers, strings, lists or dicts"
        ) from None
    return out


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def _set_submodule(model: nn.Module, qualname: str, module: nn.Module) -> None:
    parent, _, leaf = qualname.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def adapt_head_and_stem(
    model: nn.Module,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    stem: str | None = None,
    keep_weights: bool = True,
) -> bool:
    """Give ``model`` a ``num_classes``-way head and an ``in_chans``-channel stem (None: keep),
    in place, for timm and torchvision models alike. Returns whether the head was replaced.

    Head: ``reset_classifier`` where the model has it (timm), else the last ``nn.Linear`` is
    replaced; a new head is randomly initialised. Stem: the conv named ``stem`` (default: the
    first ``nn.Conv2d``) keeps its class and gets timm's ``adapt_input_conv`` of its weights
    (``keep_weights``, the weights were loaded) or a fresh initialisation.
    """
    replaced = False
    if num_classes is not None and num_classes != _head_size(model):
        reset = getattr(model, "reset_classifier", None)
        head = anatomy.last_linear(model)
        if callable(reset):
            reset(num_classes)
            replaced = True
        elif head is not None:
            _set_submodule(model, head[0], _new_linear(head[1], num_classes))
            replaced = True
    found = anatomy.first_conv(model) if stem is None else _conv_named(model, stem)
    if in_chans is not None and found is not None and found[1].in_channels != in_chans:
        _set_submodule(model, found[0], _adapted_conv(found[0], found[1], in_chans, keep_weights))
        if isinstance(getattr(model, "in_chans", None), int):  # timm's record, read first
            setattr(model, "in_chans", in_chans)  # noqa: B010 - nn.Module's typed __setattr__
    return replaced


def _head_size(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if callable(getattr(model, "reset_classifier", None)) and isinstance(n, int):
        return n
    head = anatomy.last_linear(model)
    return head[1].out_features if head else None


def _conv_named(model: nn.Module, name: str) -> tuple[str, nn.Conv2d] | None:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        return None
    return (name, module) if isinstance(module, nn.Conv2d) else None


def _adapted_conv(name: str, old: nn.Conv2d, in_chans: int, keep_weights: bool) -> nn.Conv2d:
    """A copy of ``old`` (same class, e.g. timm's Conv2dSame) taking ``in_chans`` channels."""
    if old.groups != 1:
        raise ModelError(f"stem conv has groups={old.groups}; in_chans can only adapt groups=1")
    new = copy.deepcopy(old)
    new.in_channels = in_chans
    if not keep_weights:
        shape = (old.out_channels, in_chans, *old.kernel_size)
        new.weight = nn.Parameter(old.weight.new_empty(shape))
        new.reset_parameters()
        return new
    from timm.models import adapt_input_conv

    try:
        weight = adapt_input_conv(in_chans, old.weight.detach(), base_chans=old.in_channels)
    except Exception:
        raise WeightsError(
            f"cannot adapt stem weight {name}.weight {tuple(old.weight.shape)} to "
            f"in_chans={in_chans}; use in_chans=3 or weights made for that channel count"
        ) from None
    new.weight = nn.Parameter(weight.to(old.weight.dtype).clone())
    return new


def _load_strict(model: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict(strict=True) with a one-line WeightsError; missing BN counters are fine."""
    own = model.state_dict()
    sd = dict(sd)
    for key, value in own.items():  # files saved without num_batches_tracked
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    load_exactly(
        model,
        sd,
        lambda why: WeightsError(
            f"weights from {where} do not fit the model ({why}); "
            "check the model name, num_classes and in_chans"
        ),
    )


# ---------------------------------------------------------------------------------------------
# timm


def _timm_cfg(name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def suggest_names(name: str, candidates: list[str] | None = None, limit: int = 3) -> list[str]:
    """Known model names closest to ``name`` (difflib similarity), best first.

    The candidates default to timm's models and the HAS-8 reference names.
    """
    import difflib

    if candidates is None:
        import timm

        candidates = [*timm.list_models(), *sorted(HAS8_MODELS)]
    key = name.split(".")[0].lower()
    # compare without the source prefix, so "torchvision:resnet5" finds "torchvision:resnet50"
    bare = {c.split(":", 1)[-1].lower(): c for c in candidates}
    key = key.split(":", 1)[-1]
    return [bare[m] for m in difflib.get_close_matches(key, list(bare), n=limit, cutoff=0.6)]


@register_model_source("timm")
def _build_timm(request: BuildRequest) -> tuple[nn.Module, str]:
    import timm

    name, num_classes, weights = request.name, request.num_classes, request.weights
    if not timm.is_model(name):
        near = suggest_names(name)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ModelError(
            f"unknown model {name!r}; {hint}use a timm name (e.g. resnet18), "
            "'torchvision:NAME' or 'module.path:callable'"
        )
    chans = 3 if request.in_chans is None else request.in_chans
    cfg = _timm_cfg(name)
    head_keys = [f"{c}.weight" for c in _as_list(cfg.get("classifier"))]
    stem_key = f"{_as_list(cfg.get('first_conv'))[0]}.weight" if cfg.get("first_conv") else None

    def make(classes: int | None, c: int = chans) -> nn.Module:
        extra = dict(request.kwargs)
        if classes is not None:
            extra["num_classes"] = classes
        return timm.create_model(name, pretrained=False, in_chans=c, **extra)

    sd, where = None, "none (random init)"
    if weights is not None:
        sd, where = W.load_weights_file(weights), f"file {os.fspath(weights)}"
    elif request.pretrained:
        found = W.offline_state_dict(name, lambda: make(cfg.get("num_classes", 1000), 3))
        if found is not None:
            sd, where = found
        else:
            return _timm_hub(name, cfg, num_classes, chans, request.kwargs)
    if sd is None:
        return make(num_classes), where
    file_classes = next((sd[k].shape[0] for k in head_keys if k in sd), None)
    # built as the file was made (its classes and stem channels), loaded, then adapted
    known_stem = stem_key is not None and stem_key in sd and sd[stem_key].ndim == 4
    stem = stem_key[: -len(".weight")] if stem_key is not None and known_stem else None
    file_chans = sd[f"{stem}.weight"].shape[1] if stem else chans
    model = make(file_classes if file_classes is not None else num_classes, file_chans)
    _load_strict(model, sd, where)
    # in_chans None keeps the file's channels, as num_classes None keeps its classes
    if adapt_head_and_stem(model, num_classes, request.in_chans if stem else None, stem=stem):
        where += f"; new {num_classes}-class head (random init)"
    return model, where


def _timm_hub(name, cfg, num_classes, chans, kwargs):
    import timm

    extra = dict(kwargs)
    if num_classes is not None:
        extra["num_classes"] = num_classes
    hub_id = cfg.get("hf_hub_id")
    url = cfg.get("url")
    cached = (W.hf_cached_file(hub_id) if hub_id else None) or (
        W.torch_hub_cached_file(url) if url else None
    )
    if cached is not None:
        _refuse_code(cached)
        model = timm.create_model(
            name,
            pretrained=True,
            in_chans=chans,
            pretrained_cfg_overlay={"file": str(cached)},
            **extra,
        )
        return model, f"hub cache {cached}"
    if not hub_id and not url:
        raise WeightsError(f"timm has no pretrained weights for {name!r}; pass --weights FILE")
    what = f"timm model {name!r}"
    if hub_id:
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else W.HF_FILENAMES
        fetched = W.download_hf(hub_id, what, names)
    else:
        fetched = W.download_torch_hub(url, what)
    _refuse_code(fetched)
    try:
        model = timm.create_model(
            name,
            pretrained=True,
            in_chans=chans,
            pretrained_cfg_overlay={"file": str(fetched)},
            **extra,
        )
    except Exception as exc:
        raise WeightsError(
            f"loading the downloaded weights {fetched} for {name!r} failed "
            f"({type(exc).__name__}); delete that file and retry, or pass --weights FILE"
        ) from None
    return model, f"hub {hub_id or url}"


def _refuse_code(path: Path) -> None:
    """Read a hub file as data before timm loads it: whether timm's own loader unpickles with
    weights_only depends on its version, and a file in a cache folder is data, never code."""
    W.read_hub_file(path)


# ---------------------------------------------------------------------------------------------
# torchvision


@register_model_source("torchvision")
def _build_torchvision(request: BuildRequest) -> tuple[nn.Module, str]:
    import torchvision

    name, weights = request.name, request.weights
    if name.lower() not in torchvision.models.list_models():  # get_model lowercases too
        near = suggest_names(name, [f"torchvision:{n}" for n in torchvision.models.list_models()])
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ModelError(
            f"unknown torchvision model {name!r}; {hint}see torchvision.models.list_models()"
        )
    try:
        model = torchvision.models.get_model(name, weights=None, **request.kwargs)
    except (TypeError, ValueError) as exc:  # the builder's own check of its arguments
        raise ModelError(
            f"torchvision model {name!r} refuses its arguments {sorted(request.kwargs)} "
            f"({first_line(exc, 160)}); check them against its constructor"
        ) from None
    where = "none (random init)"
    sd = None
    if weights is not None:
        sd, where = W.load_weights_file(weights), f"file {os.fspath(weights)}"
    elif request.pretrained:
        sd, where = _torchvision_hub(name)
    head = anatomy.last_linear(model)
    if sd is not None:  # built as the file was made (its classes and stem channels), then loaded
        stem = anatomy.first_conv(model)
        file_chans = sd.get(f"{stem[0]}.weight") if stem is not None else None
        adapt_head_and_stem(
            model,
            sd[f"{head[0]}.weight"].shape[0] if head and f"{head[0]}.weight" in sd else None,
            file_chans.shape[1] if file_chans is not None and file_chans.ndim == 4 else None,
            keep_weights=False,
        )
        _load_strict(model, sd, where)
    replaced = adapt_head_and_stem(
        model, request.num_classes, request.in_chans, keep_weights=sd is not None
    )
    if replaced and sd is not None:
        where += f"; new {request.num_classes}-class head (random init)"
    return model, where


def _new_linear(old: nn.Linear, out_features: int) -> nn.Linear:
    return nn.Linear(old.in_features, out_features, bias=old.bias is not None)


def _torchvision_hub(name: str) -> tuple[dict[str, torch.Tensor], str]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except Exception:
        raise WeightsError(
            f"torchvision has no weights for {name!r}; pass --weights FILE"
        ) from None
    w = enum.DEFAULT
    cached = W.torch_hub_cached_file(w.url)
    # our bounded download into torch.hub's cache, read with weights_only=True (torchvision's
    # get_state_dict would unpickle whatever file lies there, code included)
    path = cached or W.download_torch_hub(w.url, f"torchvision model {name!r}")
    return W.hub_state_dict(path), f"{'hub cache' if cached else 'hub'} {w.url}"


# ---------------------------------------------------------------------------------------------
# entry points and HAS-8


@register_model_source("entrypoint", prefix=False)
def _build_entrypoint(request: BuildRequest) -> tuple[nn.Module, str]:
    name = request.name
    module_name, _, attr = name.partition(":")
    try:
        fn: Callable[..., nn.Module] = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(
            f"cannot import entry point {name!r} ({type(exc).__name__}: {exc}); "
            "give 'package.module:callable' importable on PYTHONPATH"
        ) from None
    extra = dict(request.kwargs)
    if request.num_classes is not None:
        extra["num_classes"] = request.num_classes
    if request.in_chans is not None:
        extra["in_chans"] = request.in_chans
    try:
        model = fn(**extra)
    except TypeError as exc:
        raise ModelError(
            f"entry point {name!r} rejected its arguments {sorted(extra)}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"entry point {name!r} returned {type(model).__name__}, not an nn.Module")
    refusal = f"entry point {name!r} has no known pretrained weights; pass --weights FILE"
    where = _file_weights_only(model, request, refusal)
    record_spec(model, {"source": "entrypoint", "name": name, "kwargs": _spec_kwargs_raw(extra)})
    return model, where


def _file_weights_only(
    model: nn.Module, request: BuildRequest, refusal: str, note: str = ""
) -> str:
    """Load the weights file of ``request`` into ``model``, for a source with no published
    weights (``pretrained`` raises ``refusal``); where the weights came from."""
    if request.weights is not None:
        where = f"file {os.fspath(request.weights)}{note}"
        _load_strict(model, W.load_weights_file(request.weights), where)
        return where
    if request.pretrained:
        raise WeightsError(refusal)
    return "none (random init)"


def _spec_kwargs_raw(kwargs: dict[str, Any]) -> dict[str, Any]:
    if not all(_json_ok(v) for v in kwargs.values()):
        bad = [k for k, v in kwargs.items() if not _json_ok(v)]
        raise ModelError(f"constructor arguments {bad} are not JSON values; pass plain values")
    return dict(kwargs)


@dataclass(frozen=True)
class Has8Options:
    """The keyword arguments a HAS-8 name takes besides ``num_classes`` and ``in_chans``."""

    hybrid: bool
    recipe: Any  # the base recipe whose defaults the reference recipe keeps
    compat: str | None


def has8_options(name: str, kwargs: dict[str, Any]) -> Has8Options:
    """Pop ``hybrid`` (default True), ``recipe`` (default "has8") and ``compat`` from the
    keyword arguments of a HAS-8 name; anything else left over is an error."""
    options = Has8Options(
        hybrid=bool(kwargs.pop("hybrid", True)),
        recipe=kwargs.pop("recipe", "has8"),
        compat=kwargs.pop("compat", None),
    )
    if kwargs:
        raise ModelError(
            f"{name} takes num_classes, in_chans, hybrid, recipe, compat; got {sorted(kwargs)}"
        )
    return options


@register_model_source("has8", prefix=False)
def _build_has8(request: BuildRequest) -> tuple[nn.Module, str]:
    """The reference ANN; its hybrid is :func:`hybridize.models.create`'s job."""
    name = request.name
    options = has8_options(name, dict(request.kwargs))
    if options.hybrid:
        raise ModelError(
            f"{name} with hybrid=True is built by hybridize.models.create (it converts the ANN); "
            "this layer builds the ANN only: pass hybrid=False"
        )
    classes = 10 if request.num_classes is None else request.num_classes
    chans = 3 if request.in_chans is None else request.in_chans
    ann = build_has8_ann(name, num_classes=classes, in_chans=chans, compat=options.compat)
    refusal = f"{name} has no published weights; pass --weights FILE or pretrained=False"
    where = _file_weights_only(ann, request, refusal, note=" (ANN)")
    ann_kwargs: dict[str, Any] = {"num_classes": classes, "in_chans": chans, "hybrid": False}
    if options.compat is not None:
        ann_kwargs["compat"] = options.compat
    record_spec(
        ann, {"source": "has8", "name": name, "kwargs": ann_kwargs, "weights_source": where}
    )
    return ann, where
