"""The recipe's spiking settings come from hybridize.spiking.options, the modules' one source.

Every option of the options dataclasses is a settings field with the same default; every
allowed value and every rule reaches the module and the recipe alike; settings round-trip
through the options objects.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import asdict, fields

import pytest

from hybridize.errors import HybridizeError, RecipeError
from hybridize.recipe import (
    DecoderSettings,
    EncoderSettings,
    NeuronSettings,
    list_builtin_recipes,
    load_recipe,
)
from hybridize.spiking import (
    LIF,
    BitPlaneDecoder,
    BitPlaneEncoder,
    DecoderOptions,
    EncoderOptions,
    NeuronOptions,
    options,
)

FAMILIES = [
    # options class, module, recipe section, settings, module-only keywords
    (EncoderOptions, BitPlaneEncoder, "encoder", EncoderSettings, set()),
    (NeuronOptions, LIF, "neuron", NeuronSettings, {"time_steps"}),  # T comes from encoder.bits
    (DecoderOptions, BitPlaneDecoder, "decoder", DecoderSettings, set()),
]
IDS = ["encoder", "neuron", "decoder"]


def _stem(section: str, values: dict) -> dict:
    """A one-target recipe with ``values`` in ``section``; a decoder gets an encoder that gives
    its bits and order (the recipe checks T = B and matching orders; the module cannot)."""
    target = {"select": {"auto": "stem"}, section: values}
    if section == "decoder":
        encoder = {"bits": min(values.get("bits", 8), 16)}
        if values.get("order") in options.ORDERS and values.get("compat") is None:
            encoder["order"] = values["order"]
        target["encoder"] = encoder
    return {"targets": [target]}


@pytest.mark.parametrize(("opts_cls", "module", "section", "settings", "extra"), FAMILIES, ids=IDS)
def test_every_option_is_a_keyword_and_a_field_with_the_same_default(
    opts_cls, module, section, settings, extra
):
    names = [f.name for f in fields(opts_cls)]
    params = inspect.signature(module.__init__).parameters
    assert [k for k in params if k != "self" and k not in extra] == names
    assert list(settings.model_fields) == names
    default = opts_cls()
    for key in names:
        # None in a signature or a recipe means "the options' default" (or the compat preset's)
        for where, value in (
            ("module", params[key].default),
            ("recipe", settings.model_fields[key].default),
        ):
            assert value is None or value == getattr(default, key), (where, key)
    assert module().options == default
    assert settings().options() == default


def _literal_choices(opts_cls, key):
    annotation = str(next(f.type for f in fields(opts_cls) if f.name == key))
    return {
        "Order": options.ORDERS,
        "NormalizeMode": options.NORMALIZE_MODES,
        "QuantizeMode": options.QUANTIZE_MODES,
        "RescaleMode": options.RESCALE_MODES,
        "GainMode": options.GAIN_MODES,
        "CompatPreset": options.COMPAT_PRESETS,
        "DecoderKind": options.DECODER_KINDS,
        "EncoderSurrogateName": tuple(options.ENCODER_SURROGATE_ALPHA),
        "SpikeSurrogateName": tuple(options.SPIKE_SURROGATE_ALPHA),
    }.get(annotation.split(" ")[0])


CHOICE_KEYS = [
    (family, key)
    for family in FAMILIES
    for key in (f.name for f in fields(family[0]))
    if _literal_choices(family[0], key) is not None
]


@pytest.mark.parametrize(
    ("family", "key"), CHOICE_KEYS, ids=[f"{f[2]}.{k}" for f, k in CHOICE_KEYS]
)
def test_every_choice_reaches_the_module_and_the_recipe(family, key):
    opts_cls, module, section, _, _ = family
    allowed = _literal_choices(opts_cls, key)
    listed = f"choose one of: {', '.join(allowed)}"
    with pytest.raises(HybridizeError, match=listed) as info:
        module(**{key: "bogus"})
    assert str(info.value).startswith(f"{module.__name__}: {key}='bogus'")
    with pytest.raises(RecipeError, match=f"{section}.{key}: 'bogus' is not allowed; {listed}"):
        load_recipe(_stem(section, {key: "bogus"}))
    for value in allowed:  # each allowed value: the module and the recipe agree on it
        try:
            module(**{key: value})
            module_ok = True
        except HybridizeError:
            module_ok = False
        try:
            load_recipe(_stem(section, {key: value}))
            recipe_ok = True
        except RecipeError:
            recipe_ok = False
        assert module_ok == recipe_ok, value


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"compat": "has8-released"},
        {"surrogate": "ste", "bits": 4},
        {"surrogate": "sigsine", "alpha": 3.5, "order": "lsb", "normalize": "minmax"},
        {"normalize": "fixed", "lo": -2.0, "hi": 3.0, "quantize": "floor", "gain": "unit"},
    ],
)
def test_encoder_options_round_trip_through_dicts_and_recipes(kwargs):
    opts = BitPlaneEncoder(**kwargs).options
    again = options.resolve_encoder(**asdict(opts))
    assert again == opts and EncoderSettings(**asdict(opts)).options() == opts
    r = load_recipe(_stem("encoder", kwargs))
    assert r.settings_for(0).encoder.options() == opts
    assert BitPlaneEncoder(**r.settings_for(0).encoder.kwargs()).options == opts


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"v_reset": None, "tau": 3.5}, {"surrogate": "rect", "alpha": 0.5, "learnable_tau": True}],
)
def test_neuron_options_round_trip_through_dicts_and_recipes(kwargs):
    opts = LIF(**kwargs).options
    assert options.resolve_neuron(**asdict(opts)) == opts
    assert NeuronSettings(**asdict(opts)).options() == opts
    assert load_recipe(_stem("neuron", kwargs)).settings_for(0).neuron.options() == opts


@pytest.mark.parametrize("name", list_builtin_recipes())
def test_builtin_settings_build_spiking_modules(name):
    r = load_recipe(name)
    for i in range(len(r.targets)):
        s = r.settings_for(i)
        enc = BitPlaneEncoder(**s.encoder.kwargs())
        dec = BitPlaneDecoder(**s.decoder.kwargs())
        lif = LIF(**s.neuron.kwargs(), time_steps=s.time_steps)
        assert enc.time_steps == dec.bits == s.time_steps
        assert enc.options == s.encoder.options()
        assert dec.options == s.decoder.options()
        assert lif.options == s.neuron.options()


# Every combination of these values: the recipe accepts exactly what the module accepts.
_ENCODER_CHOICES = {
    "normalize": [None, "running", "fixed"],
    "surrogate": [None, "fourier", "ste", "sigsine"],
    "alpha": [None, 0, 3, 2.5],
    "lo_hi": [None, (0.0, 1.0), (1.0, 1.0)],
    "compat": [None, "has8-released"],
    "order": [None, "msb", "lsb"],
    "gain": [None, "unit"],
}
_NEURON_CHOICES = {
    "tau": [0.5, 1.0, 1.5],
    "v_threshold": [-1.0, 0.0, 0.4],
    "v_reset": [None, 0.0, 0.5],
    "alpha": [None, 0.0, 2.0],
}
_DECODER_CHOICES = {"bits": [1, 8, 17], "order": [None, "lsb"], "compat": [None, "has8-released"]}


def _cases(choices):
    keys = list(choices)
    for values in itertools.product(*choices.values()):
        raw = dict(zip(keys, values, strict=True))
        kwargs = {
            k: v for k, v in raw.items() if k != "lo_hi" and (v is not None or k == "v_reset")
        }
        if raw.get("lo_hi") is not None:
            kwargs["lo"], kwargs["hi"] = raw["lo_hi"]
        yield kwargs


@pytest.mark.parametrize(
    ("module", "section", "choices"),
    [
        (BitPlaneEncoder, "encoder", _ENCODER_CHOICES),
        (LIF, "neuron", _NEURON_CHOICES),
        (BitPlaneDecoder, "decoder", _DECODER_CHOICES),
    ],
    ids=IDS,
)
def test_recipe_accepts_exactly_what_the_module_accepts(module, section, choices):
    disagreements = []
    for kwargs in _cases(choices):
        try:
            module(**kwargs)
            module_error = None
        except HybridizeError as exc:
            module_error = exc
        try:
            r = load_recipe(_stem(section, kwargs))
            recipe_error = None
        except RecipeError as exc:
            recipe_error = exc
        if (module_error is None) != (recipe_error is None):
            disagreements.append((kwargs, module_error, recipe_error))
        elif module_error is not None:  # the same rule: the recipe names the key the module does
            assert f"{section}.{module_error.key}: " in str(recipe_error), (kwargs, recipe_error)
        else:
            assert getattr(r.settings_for(0), section).options() == module(**kwargs).options
    assert disagreements == []


def test_a_british_spelling_says_what_to_rename():
    with pytest.raises(
        RecipeError, match=r"encoder.normalise: unknown key \(did you mean 'normalize'\?\)"
    ):
        load_recipe(_stem("encoder", {"normalise": "auto"}))
