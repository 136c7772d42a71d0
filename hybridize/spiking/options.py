"""The options of the spiking modules, in one torch-free place (docs/spiking.md, "Options").

Each family (encoder, neuron, decoder) has a frozen dataclass whose fields, types and defaults
are the options, validated when it is built, and one ``resolve_*`` function that fills what the
caller left as None (with the defaults, or the encoder's compat preset) and builds it. The
allowed values are ``Literal`` types (the tuples below are read from them), the surrogates'
default alphas are tables here. ``BitPlaneEncoder``, ``LIF`` and ``BitPlaneDecoder`` resolve
their keyword arguments here, and the recipe schema takes its choices and defaults from here and
validates through the same rules. Nothing here imports torch: loading a recipe stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Literal, TypeVar, get_args

from hybridize.errors import SpikingConfigError

Order = Literal["msb", "lsb"]
NormalizeMode = Literal["auto", "minmax", "running", "fixed"]
QuantizeMode = Literal["none", "floor", "round"]
RescaleMode = Literal["order-aware", "none"]
GainMode = Literal["raw", "unit"]
CompatPreset = Literal["has8-released"]
DecoderKind = Literal["bitplane", "rate"]
EncoderSurrogateName = Literal["fourier", "sigsine", "tanhsine", "ste"]
SpikeSurrogateName = Literal["atan", "sigmoid", "rect", "triangle"]

ORDERS: tuple[str, ...] = get_args(Order)
NORMALIZE_MODES: tuple[str, ...] = get_args(NormalizeMode)
QUANTIZE_MODES: tuple[str, ...] = get_args(QuantizeMode)
RESCALE_MODES: tuple[str, ...] = get_args(RescaleMode)
GAIN_MODES: tuple[str, ...] = get_args(GainMode)
COMPAT_PRESETS: tuple[str, ...] = get_args(CompatPreset)
DECODER_KINDS: tuple[str, ...] = get_args(DecoderKind)
MAX_BITS = 16  # float32 holds 2^16 - 1 exactly, with margin

# The default alpha of each surrogate; None: the surrogate takes no alpha.
ENCODER_SURROGATE_ALPHA: Mapping[str, float | None] = MappingProxyType(
    {"fourier": 5, "sigsine": -10.0, "tanhsine": -10.0, "ste": None}
)
SPIKE_SURROGATE_ALPHA: Mapping[str, float] = MappingProxyType(
    {"atan": 2.0, "sigmoid": 4.0, "rect": 1.0, "triangle": 1.0}
)

# compat="has8-released": the encoder options of the released HAS-8 code.
HAS8_RELEASED_ENCODER: Mapping[str, Any] = MappingProxyType(
    {
        "order": "lsb",
        "normalize": "auto",
        "quantize": "none",
        "surrogate": "fourier",
        "alpha": 5,
        "offset": 0.5,
        "rescale": "order-aware",
        "gain": "raw",
    }
)
ENCODER_COMPAT: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {"has8-released": HAS8_RELEASED_ENCODER}
)


# --------------------------------------------------------------------------------- the errors

_NO_VALUE: Any = object()


class OptionError(SpikingConfigError):
    """An invalid option: its ``key``, the ``value`` to blame (if one is) and the ``problem``.

    The message reads ``OWNER: key=VALUE problem``. :meth:`located` is the text a recipe writes
    after ``section.key:``. ``{p}`` in ``problem`` stands before the names of options: nothing
    in a module's message, ``section.`` in a recipe's.
    """

    def __init__(self, key: str, problem: str, value: Any = _NO_VALUE, owner: str = "") -> None:
        super().__init__(key, problem)
        self.key, self.problem, self.value, self.owner = key, problem, value, owner
        self.has_value = value is not _NO_VALUE

    def located(self, prefix: str = "") -> str:
        """``VALUE problem`` with the other options' names prefixed by ``prefix``."""
        text = self.problem.replace("{p}", prefix)
        return f"{self.value!r} {text}" if self.has_value else text

    def __str__(self) -> str:
        subject = f"{self.key}={self.value!r}" if self.has_value else self.key
        return f"{self.owner}: {subject} {self.problem.replace('{p}', '')}"


def check_choice(owner: str, key: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a one-line error."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise OptionError(key, f"is not allowed; choose one of: {', '.join(allowed)}", value, owner)
    return value


def check_bits(owner: str, key: str, bits: Any) -> int:
    """Bits per value: an int in 1..MAX_BITS."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
        raise OptionError(key, f"is invalid; use an integer in 1..{MAX_BITS}", bits, owner)
    return bits


def check_number(
    owner: str,
    key: str,
    value: Any,
    *,
    above: float | None = None,
    at_most: float | None = None,
) -> float:
    """A finite real number, optionally > ``above`` and <= ``at_most``; returned as a float."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and above is not None:
        ok = value > above
    if ok and at_most is not None:
        ok = value <= at_most
    if not ok:
        bounds = [f"{op} {b:g}" for op, b in ((">", above), ("<=", at_most)) if b is not None]
        need = f"a finite number {' and '.join(bounds)}".rstrip()
        raise OptionError(key, f"is invalid; give {need}", value, owner)
    return float(value)


def check_flag(owner: str, key: str, value: Any) -> bool:
    """True or False (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise OptionError(key, "is invalid; give true or false", value, owner)
    return value


def check_fixed_range(owner: str, lo: Any, hi: Any) -> tuple[float, float]:
    """The range of normalize 'fixed': two finite numbers with lo < hi."""
    if (
        lo is None
        or hi is None
        or not check_number(owner, "hi", hi) > check_number(owner, "lo", lo)
    ):
        raise OptionError(
            "normalize",
            f"needs a range with lo < hi (got lo {lo}, hi {hi}); set {{p}}lo and {{p}}hi",
            "fixed",
            owner,
        )
    return float(lo), float(hi)


# ----------------------------------------------------------- the gain='unit' rule (torch-free)


def rescale_profile(bits: int, rescale: str) -> list[float]:
    """The rescale profile R_k for k = 0..B-1: F_k = k / 2^(B-1-k) (order-aware) or 1 (none)."""
    if rescale == "none":
        return [1.0] * bits
    return [k * 2.0 ** (k - (bits - 1)) for k in range(bits)]


def _fourier_period_mean(alpha: Any, offset: float, bits: int) -> float:
    # every cos(n u_k), n >= 1, averages to 0 over the period 2^(k+1) of plane k
    return float(offset)


def _zero_period_mean(alpha: Any, offset: float, bits: int) -> float:
    # the derivative of a periodic primitive (sigmoid / tanh of alpha sin u_k) averages to 0
    return 0.0


def _ste_period_mean(alpha: Any, offset: float, bits: int) -> float:
    return 1.0 / (2**bits - 1)


# (alpha, offset, bits) -> the mean of the surrogate d_k over one period of plane k (every k).
ENCODER_PERIOD_MEAN: Mapping[str, Callable[[Any, float, int], float]] = MappingProxyType(
    {
        "fourier": _fourier_period_mean,
        "sigsine": _zero_period_mean,
        "tanhsine": _zero_period_mean,
        "ste": _ste_period_mean,
    }
)


def raw_mean_slope(bits: int, surrogate: str, alpha: Any, offset: float, rescale: str) -> float:
    """sum_k 2^k R_k m: (2^B - 1) times the period-mean d decode(encode(z)) / dz of the raw
    backward (m: the surrogate's period mean); 0 means gain='unit' has nothing to calibrate."""
    m = ENCODER_PERIOD_MEAN[surrogate](alpha, offset, bits)
    return sum(2.0**k * r_k * m for k, r_k in enumerate(rescale_profile(bits, rescale)))


# ----------------------------------------------------------------------------- the options

_T = TypeVar("_T")
Check = Callable[[str, str, Any], Any]


def _choice(allowed: tuple[str, ...]) -> Check:
    return lambda owner, key, value: check_choice(owner, key, value, allowed)


def _number(above: float | None = None, at_most: float | None = None) -> Check:
    return lambda owner, key, value: check_number(owner, key, value, above=above, at_most=at_most)


def _nullable(cls: type, key: str) -> bool:
    """Whether None is a value of option ``key`` (its annotation admits None)."""
    return "None" in str(next(f.type for f in fields(cls) if f.name == key))


def _check_fields(opts: Any, checks: Mapping[str, Check], owner: str) -> None:
    for key, check in checks.items():
        value = getattr(opts, key)
        if value is not None or not _nullable(type(opts), key):
            object.__setattr__(opts, key, check(owner, key, value))


def check_option(cls: type, key: str, value: Any) -> Any:
    """Check one value of option ``key`` of an options class alone (no cross-field rule)."""
    return _CHECKS[cls][key](cls.__name__, key, value)


_ENCODER_CHECKS: Mapping[str, Check] = {
    "bits": check_bits,
    "order": _choice(ORDERS),
    "normalize": _choice(NORMALIZE_MODES),
    "quantize": _choice(QUANTIZE_MODES),
    "surrogate": _choice(tuple(ENCODER_SURROGATE_ALPHA)),
    "alpha": _number(),
    "offset": _number(),
    "rescale": _choice(RESCALE_MODES),
    "lo": _number(),
    "hi": _number(),
    "momentum": _number(above=0, at_most=1),
    "compat": _choice(COMPAT_PRESETS),
    "gain": _choice(GAIN_MODES),
}


@dataclass(frozen=True)
class EncoderOptions:
    """The bit-plane encoder's options (docs/spiking.md), validated when built.

    ``alpha`` and ``rescale`` left as None become the surrogate's: its default alpha (ste takes
    none), and rescale "none" for ste, "order-aware" otherwise. With ``compat`` set, the preset's
    options must hold its values (:func:`resolve_encoder` fills them in).
    """

    bits: int = 8
    order: Order = "msb"
    normalize: NormalizeMode = "running"
    quantize: QuantizeMode = "round"
    surrogate: EncoderSurrogateName = "fourier"
    alpha: float | None = None
    offset: float = 0.5
    rescale: RescaleMode | None = None
    lo: float | None = None
    hi: float | None = None
    momentum: float = 0.1
    compat: CompatPreset | None = None
    gain: GainMode = "raw"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_fields(self, _ENCODER_CHECKS, owner)
        for key, preset in ENCODER_COMPAT.get(self.compat or "", {}).items():
            value = getattr(self, key)
            if value is not None and value != preset:  # None: alpha/rescale follow the surrogate
                raise OptionError(
                    key,
                    f"contradicts compat {self.compat!r} (which sets {{p}}{key}={preset!r}); "
                    f"drop {{p}}{key} or {{p}}compat",
                    value,
                    owner,
                )
        object.__setattr__(self, "alpha", _encoder_alpha(owner, self.surrogate, self.alpha))
        if self.rescale is None:
            object.__setattr__(
                self, "rescale", "none" if self.surrogate == "ste" else "order-aware"
            )
        if self.normalize == "fixed":
            check_fixed_range(owner, self.lo, self.hi)
        elif self.lo is not None or self.hi is not None:
            raise OptionError(
                "lo/hi",
                f"only apply to normalize 'fixed' (got {self.normalize!r}); drop {{p}}lo/{{p}}hi "
                "or set {p}normalize to 'fixed'",
                owner=owner,
            )
        if self.gain == "unit" and self.mean_slope() == 0:
            raise OptionError(
                "gain",
                f"cannot calibrate surrogate {self.surrogate!r} (offset {self.offset}, rescale "
                f"{self.rescale!r}, bits {self.bits}): its mean slope over a period is 0; use "
                "fourier with offset != 0 or ste, or gain 'raw'",
                self.gain,
                owner,
            )

    def mean_slope(self) -> float:
        """:func:`raw_mean_slope` of these options."""
        return raw_mean_slope(self.bits, self.surrogate, self.alpha, self.offset, str(self.rescale))


def _encoder_alpha(owner: str, surrogate: str, alpha: float | None) -> float | None:
    """alpha as the surrogate needs it: its default if None; fourier: a harmonic count."""
    default = ENCODER_SURROGATE_ALPHA[surrogate]
    if alpha is None:
        return default
    if default is None:
        problem = f"is given but the {surrogate!r} surrogate takes no alpha; drop {{p}}alpha"
        raise OptionError("alpha", problem, alpha, owner)
    if surrogate == "fourier":
        if alpha < 1 or not float(alpha).is_integer():
            raise OptionError(
                "alpha",
                "is not a harmonic count; the fourier surrogate needs a whole number >= 1 (e.g. 5)",
                alpha,
                owner,
            )
        return int(alpha)
    if alpha == 0:
        raise OptionError("alpha", "gives no gradient; use e.g. -10", alpha, owner)
    return alpha


_NEURON_CHECKS: Mapping[str, Check] = {
    # the membrane keeps 1 - 1/tau of its distance to rest per step: a leak needs tau > 1
    "tau": _number(above=1),
    "v_threshold": _number(above=0),
    "v_reset": _number(),
    "decay_input": check_flag,
    "detach_reset": check_flag,
    "surrogate": _choice(tuple(SPIKE_SURROGATE_ALPHA)),
    "alpha": _number(above=0),
    "learnable_tau": check_flag,
}


@dataclass(frozen=True)
class NeuronOptions:
    """The LIF neuron's options (docs/method.md, the LIF section), validated when built.

    ``v_reset`` None is the soft reset; ``alpha`` None becomes the surrogate's default. With
    ``learnable_tau`` (PLIF), ``tau`` is the initial value.
    """

    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    decay_input: bool = True
    detach_reset: bool = False
    surrogate: SpikeSurrogateName = "atan"
    alpha: float | None = None
    learnable_tau: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_fields(self, _NEURON_CHECKS, owner)
        if self.alpha is None:
            object.__setattr__(self, "alpha", SPIKE_SURROGATE_ALPHA[self.surrogate])
        if self.v_reset is not None and self.v_reset >= self.v_threshold:
            raise OptionError(
                "v_reset",
                f"must be below {{p}}v_threshold {self.v_threshold} (else the neuron fires at "
                "every step); lower {p}v_reset or raise {p}v_threshold",
                self.v_reset,
                owner,
            )


_DECODER_CHECKS: Mapping[str, Check] = {
    "bits": check_bits,
    "order": _choice(ORDERS),
    "kind": _choice(DECODER_KINDS),
    "compat": _choice(COMPAT_PRESETS),
}


@dataclass(frozen=True)
class DecoderOptions:
    """The decoder's options, validated when built. ``compat`` fixes MSB-first weights."""

    bits: int = 8
    order: Order = "msb"
    kind: DecoderKind = "bitplane"
    compat: CompatPreset | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_fields(self, _DECODER_CHECKS, owner)
        if self.compat is not None and self.order != "msb":
            raise OptionError(
                "order",
                f"contradicts compat {self.compat!r} (fixed MSB-first weights); drop {{p}}order "
                "or {p}compat",
                self.order,
                owner,
            )


_CHECKS: Mapping[type, Mapping[str, Check]] = {
    EncoderOptions: _ENCODER_CHECKS,
    NeuronOptions: _NEURON_CHECKS,
    DecoderOptions: _DECODER_CHECKS,
}

DEFAULT_ENCODER = EncoderOptions()
DEFAULT_NEURON = NeuronOptions()
DEFAULT_DECODER = DecoderOptions()


# ------------------------------------------------------------------------------- resolving


def _build(cls: type[_T], owner: str, given: Mapping[str, Any]) -> _T:
    """``cls(**given)`` without the Nones that mean "the default"; errors name ``owner``."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    for key in given:
        if key not in names:
            raise OptionError(key, f"is not an option; use: {', '.join(names)}", owner=owner)
    kept = {k: v for k, v in given.items() if v is not None or _nullable(cls, k)}
    try:
        return cls(**kept)
    except OptionError as exc:
        exc.owner = owner
        raise


def resolve_encoder(owner: str = "EncoderOptions", /, **given: Any) -> EncoderOptions:
    """Encoder options from keyword arguments: None takes the default, or with ``compat`` the
    preset's value (an explicit value that differs from the preset is an error)."""
    compat = given.get("compat")
    preset: Mapping[str, Any] = {}
    if compat is not None:
        preset = ENCODER_COMPAT[check_choice(owner, "compat", compat, COMPAT_PRESETS)]
    filled = {**given, **{k: v for k, v in preset.items() if given.get(k) is None}}
    return _build(EncoderOptions, owner, filled)


def resolve_neuron(owner: str = "NeuronOptions", /, **given: Any) -> NeuronOptions:
    """Neuron options from keyword arguments (``v_reset=None``: soft reset)."""
    return _build(NeuronOptions, owner, given)


def resolve_decoder(owner: str = "DecoderOptions", /, **given: Any) -> DecoderOptions:
    """Decoder options from keyword arguments (``order=None``: MSB first)."""
    return _build(DecoderOptions, owner, given)


def option_property(name: str) -> property:
    """A read-only attribute of a module that reads ``self.options.<name>``."""
    return property(lambda self: getattr(self.options, name), doc=f"``options.{name}``")
