"""The recipe schema: pydantic models for block settings, selectors, targets and the recipe.

Every model forbids unknown keys so that typos fail loudly. The spiking settings
(:class:`EncoderSettings`, :class:`NeuronSettings`, :class:`DecoderSettings`) are the keyword
arguments of ``BitPlaneEncoder``, ``LIF`` and ``BitPlaneDecoder``: their choices, defaults and
rules come from :mod:`hybridize.spiking.options` (torch-free), and their :meth:`kwargs` returns
only the keys written in the recipe, so the modules' own defaults apply to everything else.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hybridize.spiking.options import (
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    DEFAULT_NEURON,
    CompatPreset,
    DecoderKind,
    DecoderOptions,
    EncoderOptions,
    EncoderSurrogateName,
    GainMode,
    NeuronOptions,
    NormalizeMode,
    OptionError,
    Order,
    QuantizeMode,
    RescaleMode,
    SpikeSurrogateName,
    check_option,
    resolve_decoder,
    resolve_encoder,
    resolve_neuron,
)

# A finite number; ints are accepted, bools and strings are not.
Number = Annotated[StrictFloat, Field(allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

AutoKind = Literal["stem", "blocks", "stages", "last-stage", "head", "conv-groups"]
AUTO_KINDS: tuple[str, ...] = AutoKind.__args__  # type: ignore[attr-defined]

_SPIKING_SECTIONS = ("encoder", "neuron", "decoder")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _KwargsModel(_Model):
    """The keyword arguments of a spiking module: each value is checked by the options module,
    and unset keys fall back to the module's own defaults (:meth:`options` resolves them)."""

    _options_class: ClassVar[type]

    @field_validator("*")
    @classmethod
    def _valid_option(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:  # None: the type said whether it is allowed (a default, or a value)
            try:
                check_option(cls._options_class, str(info.field_name), value)
            except OptionError as exc:
                raise ValueError(exc.located()) from None
        return value

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments written in the recipe (explicit nulls included)."""
        return self.model_dump(mode="json", include=set(self.model_fields_set))

    def effective(self) -> dict[str, Any]:
        """Every option as the module will use it (raises OptionError if they do not agree)."""
        return asdict(self.options())

    def options(self) -> Any:
        """The resolved options object of these settings."""
        raise NotImplementedError


class EncoderSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.BitPlaneEncoder``.

    Null (the default) for order, normalize, quantize, surrogate, alpha, offset, rescale and gain
    means the encoder's default, or the ``compat`` preset's value; see :meth:`effective`.
    """

    _options_class = EncoderOptions

    bits: StrictInt = DEFAULT_ENCODER.bits
    order: Order | None = None
    normalize: NormalizeMode | None = None
    quantize: QuantizeMode | None = None
    surrogate: EncoderSurrogateName | None = None
    alpha: Number | None = None
    offset: Number | None = None
    rescale: RescaleMode | None = None
    lo: Number | None = None
    hi: Number | None = None
    momentum: Number = DEFAULT_ENCODER.momentum
    compat: CompatPreset | None = None
    gain: GainMode | None = None

    def options(self) -> EncoderOptions:
        """The encoder's options (explicit, else the compat preset, else the default)."""
        return resolve_encoder("encoder", **self.kwargs())


class NeuronSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.LIF`` (``time_steps`` is set from encoder.bits)."""

    _options_class = NeuronOptions

    tau: Number = DEFAULT_NEURON.tau
    v_threshold: Number = DEFAULT_NEURON.v_threshold
    v_reset: Number | None = DEFAULT_NEURON.v_reset
    decay_input: StrictBool = DEFAULT_NEURON.decay_input
    detach_reset: StrictBool = DEFAULT_NEURON.detach_reset
    surrogate: SpikeSurrogateName = DEFAULT_NEURON.surrogate
    alpha: Number | None = None
    learnable_tau: StrictBool = DEFAULT_NEURON.learnable_tau

    @model_validator(mode="before")
    @classmethod
    def _no_time_steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and "time_steps" in data:
            raise ValueError(
                "time_steps is not a recipe key: T always equals encoder.bits; set encoder.bits"
            )
        return data

    def options(self) -> NeuronOptions:
        """The neuron's options (the surrogate's alpha when alpha is unset)."""
        return resolve_neuron("neuron", **self.kwargs())


class DecoderSettings(_KwargsModel):
    """Keyword arguments of ``hybridize.spiking.BitPlaneDecoder``.

    ``bits``, ``order`` and ``compat`` follow the encoder's when left unset (T = B).
    """

    _options_class = DecoderOptions

    bits: StrictInt = DEFAULT_DECODER.bits
    order: Order | None = None
    kind: DecoderKind = DEFAULT_DECODER.kind
    compat: CompatPreset | None = None

    def options(self) -> DecoderOptions:
        """The decoder's options."""
        return resolve_decoder("decoder", **self.kwargs())


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


def consistency_problem(settings: BlockSettings) -> str | None:
    """The first cross-field inconsistency of merged settings, as ``key: problem; fix``."""
    for section in ("encoder", "decoder"):
        problem = _options_problem(settings, section)
        if problem is not None:
            return problem
    enc, dec = settings.encoder.options(), settings.decoder.options()
    if dec.bits != enc.bits:
        return (
            f"decoder.bits: {dec.bits} does not match encoder.bits {enc.bits} (T = B); "
            "drop decoder.bits (it follows the encoder) or make them equal"
        )
    if enc.compat is None and dec.compat is None and dec.order != enc.order:
        return (
            f"decoder.order: {dec.order!r} does not match encoder.order {enc.order!r}; drop "
            "decoder.order (it follows the encoder) or set compat: has8-released to "
            "reproduce the released code's mismatch"
        )
    return _options_problem(settings, "neuron")


def _options_problem(settings: BlockSettings, section: str) -> str | None:
    """The options module's complaint about one spiking section, as ``section.key: problem``."""
    try:
        getattr(settings, section).options()
    except OptionError as exc:
        return f"{section}.{exc.key}: {exc.located(section + '.')}"
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
