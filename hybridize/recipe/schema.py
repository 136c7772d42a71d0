"""The recipe schema: pydantic models for block settings, selectors, targets and the recipe.

Every model forbids unknown keys so that typos fail loudly. The spiking settings
(:class:`EncoderSettings`, :class:`NeuronSettings`, :class:`DecoderSettings`) mirror the keyword
arguments of ``BitPlaneEncoder``, ``LIF`` and ``BitPlaneDecoder``; their :meth:`kwargs` returns only
the keys written in the recipe, so the spiking modules' own defaults apply to everything else.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

# A finite number; ints are accepted, bools and strings are not.
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

AutoKind = Literal["stem", "blocks", "stages", "last-stage", "head", "conv-groups"]
AUTO_KINDS: tuple[str, ...] = AutoKind.__args__  # type: ignore[attr-defined]

_SPIKING_SECTIONS = ("encoder", "neuron", "decoder")

# The encoder's defaults and its compat preset (docs/architecture.md; hybridize.spiking keeps the
# same tables, and a test checks they agree). Copied so that loading a recipe needs no torch.
ENCODER_DEFAULTS: dict[str, Any] = {
    "order": "msb",
    "normalize": "running",
    "quantize": "round",
    "surrogate": "fourier",
    "offset": 0.5,
    "gain": "raw",
}
HAS8_RELEASED_ENCODER: dict[str, Any] = {
    "order": "lsb",
    "normalize": "auto",
    "quantize": "none",
    "surrogate": "fourier",
    "alpha": 5,
    "offset": 0.5,
    "rescale": "order-aware",
    "gain": "raw",
}
# default alpha per encoder surrogate; None: the surrogate takes no alpha
_ENCODER_SURROGATE_ALPHA: dict[str, float | None] = {
    "fourier": 5,
    "sigsine": -10.0,
    "tanhsine": -10.0,
    "ste": None,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _KwargsModel(_Model):
    """Settings whose unset keys fall back to the spiking module's own defaults."""

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments written in the recipe (explicit nulls included)."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))


class EncoderSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.BitPlaneEncoder``.

    Null (the default) for order, normalize, quantize, surrogate, alpha, offset, rescale and gain
    means the encoder's default, or the ``compat`` preset's value; see :meth:`effective`.
    """

    bits: Annotated[StrictInt, Field(ge=1, le=16)] = 8
    order: Literal["msb", "lsb"] | None = None
    normalize: Literal["auto", "minmax", "running", "fixed"] | None = None
    quantize: Literal["none", "floor", "round"] | None = None
    surrogate: Literal["fourier", "sigsine", "tanhsine", "ste"] | None = None
    alpha: Number | None = None
    offset: Number | None = None
    rescale: Literal["order-aware", "none"] | None = None
    lo: Number | None = None
    hi: Number | None = None
    momentum: Annotated[Number, Field(gt=0, le=1)] = 0.1
    compat: Literal["has8-released"] | None = None
    gain: Literal["raw", "unit"] | None = None

    def effective(self) -> dict[str, Any]:
        """Every option as the encoder will use it (explicit, else compat preset, else default)."""
        values = self.model_dump(mode="json")
        preset = HAS8_RELEASED_ENCODER if self.compat is not None else {}
        for key, value in values.items():
            if value is None:
                values[key] = preset.get(key, ENCODER_DEFAULTS.get(key))
        if values["alpha"] is None:
            values["alpha"] = _ENCODER_SURROGATE_ALPHA[values["surrogate"]]
        if values["rescale"] is None:
            values["rescale"] = "none" if values["surrogate"] == "ste" else "order-aware"
        return values


class NeuronSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.LIF`` (``time_steps`` is set from encoder.bits)."""

    tau: Annotated[Number, Field(gt=1)] = 2.0
    v_threshold: Annotated[Number, Field(gt=0)] = 1.0
    v_reset: Number | None = 0.0
    decay_input: StrictBool = True
    detach_reset: StrictBool = False
    surrogate: Literal["atan", "sigmoid", "rect", "triangle"] = "atan"
    alpha: Annotated[Number, Field(gt=0)] | None = None
    learnable_tau: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _no_time_steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and "time_steps" in data:
            raise ValueError(
                "time_steps is not a recipe key: T always equals encoder.bits; set encoder.bits"
            )
        return data


class DecoderSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.BitPlaneDecoder``.

    ``bits``, ``order`` and ``compat`` follow the encoder's when left unset (T = B).
    """

    bits: Annotated[StrictInt, Field(ge=1, le=16)] = 8
    order: Literal["msb", "lsb"] | None = None
    kind: Literal["bitplane", "rate"] = "bitplane"
    compat: Literal["has8-released"] | None = None


class TraceSettings(_Model):
    """torch.fx tracing options for models that plain ``symbolic_trace`` cannot handle."""

    leaf_modules: list[NonEmptyStr] = Field(default_factory=list)
    autowrap_functions: list[NonEmptyStr] = Field(default_factory=list)

    @field_validator("leaf_modules")
    @classmethod
    def _class_names(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _DOTTED.match(item):
                raise ValueError(
                    f"{item!r} is not a class name or dotted path (e.g. timm.layers.BatchNormAct2d)"
                )
        return value

    @field_validator("autowrap_functions")
    @classmethod
    def _function_paths(cls, value: list[str]) -> list[str]:
        for item in value:
            if not _DOTTED.match(item) or "." not in item:
                raise ValueError(
                    f"{item!r} is not a dotted function path (module.function, e.g. torch.roll)"
                )
        return value


class Segment(_Model):
    """A single-entry single-exit run of fx nodes, named by its first and last node."""

    start: NonEmptyStr
    end: NonEmptyStr


class Selector(_Model):
    """Which graph regions a target selects; exactly one key is set."""

    name: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | None = None
    type: NonEmptyStr | Annotated[list[NonEmptyStr], Field(min_length=1)] | None = None
    segment: Segment | None = None
    auto: AutoKind | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Selector:
        given = [key for key in type(self).model_fields if getattr(self, key) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise ValueError(f"set exactly one of name, type, segment, auto (got: {got})")
        if self.type is not None:
            for item in self.patterns:
                if not _DOTTED.match(item):
                    raise ValueError(
                        f"type {item!r} is not a class name or dotted path (e.g. BasicBlock, "
                        "timm.layers.BatchNormAct2d)"
                    )
        return self

    @property
    def kind(self) -> str:
        """The selector key that is set: ``name``, ``type``, ``segment`` or ``auto``."""
        return next(key for key in type(self).model_fields if getattr(self, key) is not None)

    @property
    def patterns(self) -> list[str]:
        """The name globs or class names as a list (empty for segment and auto selectors)."""
        value = getattr(self, self.kind)
        if isinstance(value, str) and self.kind in ("name", "type"):
            return [value]
        return list(value) if isinstance(value, list) else []

    def describe(self) -> str:
        """A short human-readable form, e.g. ``name: 'layer4.*'`` or ``auto: stem``."""
        if self.segment is not None:
            return f"segment: {self.segment.start}..{self.segment.end}"
        if self.auto is not None:
            return f"auto: {self.auto}"
        value = getattr(self, self.kind)
        return f"{self.kind}: {value!r}"

    def to_dict(self) -> dict[str, Any]:
        """The one set key, JSON-safe."""
        return self.model_dump(mode="json", exclude_none=True)


class _BlockFields(_Model):
    """The per-region settings shared by ``defaults`` and every target."""

    mode: Literal["parallel", "replace", "skip"] = "parallel"
    twin_init: Literal["copy", "fresh"] = "fresh"
    gate: Literal["fixed", "learnable"] = "fixed"
    gate_shape: Literal["scalar", "channel"] = "scalar"
    gate_init: Number | None = None
    encoder: EncoderSettings = EncoderSettings()
    neuron: NeuronSettings = NeuronSettings()
    decoder: DecoderSettings = DecoderSettings()
    pooling: Literal["max-to-avg", "keep"] = "max-to-avg"
    residual: Literal["sew", "keep"] = "sew"
    bn_momentum: Annotated[Number, Field(gt=0, le=1)] | None = None


BLOCK_FIELDS: tuple[str, ...] = tuple(_BlockFields.model_fields)


class BlockSettings(_BlockFields):
    """Settings of one converted region (the recipe defaults, or a target merged into them)."""

    @property
    def time_steps(self) -> int:
        """T, the number of time steps: the encoder's bit count."""
        return self.encoder.bits

    def gate_init_value(self) -> float:
        """The gate's initial value: ``gate_init``, else 1.0 for fixed and 0.0 for learnable."""
        if self.gate_init is not None:
            return self.gate_init
        return 1.0 if self.gate == "fixed" else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Every plain setting, plus only the written encoder/neuron/decoder keys; JSON-safe."""
        data = self.model_dump(mode="json")
        for section in _SPIKING_SECTIONS:
            data[section] = getattr(self, section).kwargs()
        return data


class Target(_BlockFields):
    """One recipe target: a selector, whether it must match, and overrides of the defaults."""

    select: Selector
    required: StrictBool = True

    def overrides(self) -> dict[str, Any]:
        """The block settings this target writes (spiking sections as their written keys)."""
        data: dict[str, Any] = {}
        for key in BLOCK_FIELDS:
            if key in self.model_fields_set:
                value = getattr(self, key)
                data[key] = value.kwargs() if isinstance(value, _KwargsModel) else value
        return data

    def to_dict(self) -> dict[str, Any]:
        """select, required, then the overrides; JSON-safe and minimal."""
        return {"select": self.select.to_dict(), "required": self.required, **self.overrides()}


def merge_settings(defaults: BlockSettings, target: Target) -> BlockSettings:
    """Defaults overridden by a target; encoder/neuron/decoder dicts merge key by key.

    The decoder then takes the encoder's bits, order and compat where it does not set them.
    """
    data: dict[str, Any] = defaults.to_dict()
    for key, value in target.overrides().items():
        data[key] = {**data[key], **value} if key in _SPIKING_SECTIONS else value
    encoder, decoder = data["encoder"], data["decoder"]
    if "bits" in encoder:
        decoder.setdefault("bits", encoder["bits"])
    if "compat" in encoder:
        decoder.setdefault("compat", encoder["compat"])
    if encoder.get("order") and encoder.get("compat") is None and decoder.get("compat") is None:
        decoder.setdefault("order", encoder["order"])
    return BlockSettings.model_validate(data)


def _zero_mean_slope(eff: dict[str, Any]) -> bool:
    """True when the encoder backward's mean slope is 0, so gain 'unit' has nothing to scale
    (the rule of hybridize.spiking.encoder.gain_scale: sigsine/tanhsine average 0 over a period,
    fourier averages its offset, and order-aware rescaling zeroes the only plane of 1 bit)."""
    if eff["surrogate"] in ("sigsine", "tanhsine"):
        return True
    if eff["surrogate"] == "fourier" and eff["offset"] == 0:
        return True
    return eff["rescale"] == "order-aware" and eff["bits"] == 1


def _encoder_problem(enc: EncoderSettings) -> str | None:
    if enc.compat is not None:
        for key, preset in HAS8_RELEASED_ENCODER.items():
            value = getattr(enc, key)
            if value is not None and value != preset:
                return (
                    f"encoder.{key}: {value!r} contradicts compat {enc.compat!r} (which sets "
                    f"{key}: {preset!r}); drop encoder.{key} or encoder.compat"
                )
    eff = enc.effective()
    surrogate, alpha = eff["surrogate"], enc.alpha
    if alpha is not None and _ENCODER_SURROGATE_ALPHA[surrogate] is None:
        return f"encoder.alpha: the {surrogate!r} surrogate takes no alpha; drop encoder.alpha"
    if surrogate == "fourier" and alpha is not None and (alpha < 1 or alpha != int(alpha)):
        return (
            f"encoder.alpha: {alpha} is not a harmonic count; the fourier surrogate needs a "
            "whole number >= 1 (e.g. 5)"
        )
    if alpha == 0:
        return "encoder.alpha: 0 gives no gradient; use e.g. -10"
    if eff["gain"] == "unit" and _zero_mean_slope(eff):
        return (
            f"encoder.gain: 'unit' cannot calibrate surrogate {surrogate!r} (offset "
            f"{eff['offset']}, rescale {eff['rescale']!r}, bits {eff['bits']}): its mean slope "
            "over a period is 0; use fourier with offset != 0 or ste, or gain: raw"
        )
    if eff["normalize"] == "fixed":
        if enc.lo is None or enc.hi is None or not enc.lo < enc.hi:
            return (
                "encoder.normalize: 'fixed' needs a range with lo < hi "
                f"(got lo {enc.lo}, hi {enc.hi}); set encoder.lo and encoder.hi"
            )
    elif enc.lo is not None or enc.hi is not None:
        return (
            f"encoder.lo/hi: only apply to normalize 'fixed' (got {eff['normalize']!r}); drop "
            "lo/hi or set encoder.normalize: fixed"
        )
    return None


def consistency_problem(settings: BlockSettings) -> str | None:
    """The first cross-field inconsistency of merged settings, as ``key: problem; fix``."""
    enc, dec, neuron = settings.encoder, settings.decoder, settings.neuron
    problem = _encoder_problem(enc)
    if problem is not None:
        return problem
    if dec.bits != enc.bits:
        return (
            f"decoder.bits: {dec.bits} does not match encoder.bits {enc.bits} (T = B); "
            "drop decoder.bits (it follows the encoder) or make them equal"
        )
    if dec.compat is not None and dec.order not in (None, "msb"):
        return (
            f"decoder.order: {dec.order!r} contradicts decoder compat {dec.compat!r} (fixed "
            "MSB-first weights); drop decoder.order or decoder.compat"
        )
    enc_order = enc.effective()["order"]
    if enc.compat is None and dec.compat is None and (dec.order or "msb") != enc_order:
        return (
            f"decoder.order: {dec.order!r} does not match encoder.order {enc_order!r}; drop "
            "decoder.order (it follows the encoder) or set compat: has8-released to "
            "reproduce the released code's mismatch"
        )
    if neuron.v_reset is not None and neuron.v_reset >= neuron.v_threshold:
        return (
            f"neuron.v_reset: {neuron.v_reset} must be below neuron.v_threshold "
            f"{neuron.v_threshold} (else the neuron fires at every step)"
        )
    return None


class Recipe(_Model):
    """A layer-selection recipe: defaults, tracing options and an ordered list of targets.

    Deny by default: only regions some target selects are converted; where several targets
    select a region, the last one wins.
    """

    name: NonEmptyStr = "custom"
    description: str = ""
    defaults: BlockSettings = BlockSettings()
    trace: TraceSettings = TraceSettings()
    targets: Annotated[list[Target], Field(min_length=1)]

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        for index in range(len(self.targets)):
            problem = consistency_problem(self.settings_for(index))
            if problem is not None:
                raise ValueError(f"targets[{index}] (with defaults merged): {problem}")
        return self

    def settings_for(self, target_index: int) -> BlockSettings:
        """The settings of target ``target_index``: defaults merged with its overrides."""
        return merge_settings(self.defaults, self.targets[target_index])

    @property
    def leaf_modules(self) -> list[str]:
        """Shortcut for ``trace.leaf_modules``."""
        return self.trace.leaf_modules

    @property
    def autowrap_functions(self) -> list[str]:
        """Shortcut for ``trace.autowrap_functions``."""
        return self.trace.autowrap_functions

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; ``load_recipe(r.to_dict()) == r``."""
        return {
            "name": self.name,
            "description": self.description,
            "defaults": self.defaults.to_dict(),
            "trace": self.trace.model_dump(mode="json"),
            "targets": [target.to_dict() for target in self.targets],
        }

    def to_yaml(self) -> str:
        """The recipe as YAML text that loads back to an equal recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=100)
