"""The recipe's spiking settings agree with hybridize.spiking's constructors.

The recipe validates without importing torch, so it mirrors the constructors' keyword names,
defaults and rules; these tests hold the two in step (they skip until hybridize.spiking exists).
"""

from __future__ import annotations

import inspect
import itertools

import pytest

from hybridize.errors import HybridizeError, RecipeError
from hybridize.recipe import (
    DecoderSettings,
    EncoderSettings,
    NeuronSettings,
    list_builtin_recipes,
    load_recipe,
    schema,
)

spiking = pytest.importorskip("hybridize.spiking")
if not all(hasattr(spiking, n) for n in ("BitPlaneEncoder", "BitPlaneDecoder", "LIF")):
    pytest.skip("hybridize.spiking not complete yet", allow_module_level=True)


@pytest.mark.parametrize(
    ("settings", "cls_name", "excluded"),
    [
        (EncoderSettings, "BitPlaneEncoder", set()),
        (NeuronSettings, "LIF", {"time_steps"}),  # T is set from encoder.bits by convert
        (DecoderSettings, "BitPlaneDecoder", set()),
    ],
)
def test_fields_are_the_constructor_keywords_with_the_same_defaults(settings, cls_name, excluded):
    params = inspect.signature(getattr(spiking, cls_name).__init__).parameters
    keywords = {k: p.default for k, p in params.items() if k != "self"}
    assert list(settings.model_fields) == [k for k in keywords if k not in excluded]
    for key, field in settings.model_fields.items():
        assert field.default == keywords[key], key


def test_encoder_preset_tables_match_spiking():
    from hybridize.spiking import encoder as spiking_encoder
    from hybridize.spiking.surrogates import ENCODER_SURROGATES

    assert schema.ENCODER_DEFAULTS == spiking_encoder.ENCODER_DEFAULTS
    assert schema.HAS8_RELEASED_ENCODER == spiking_encoder.HAS8_RELEASED_ENCODER
    assert {
        name: spec.default_alpha for name, spec in ENCODER_SURROGATES.items()
    } == schema._ENCODER_SURROGATE_ALPHA


@pytest.mark.parametrize("name", list_builtin_recipes())
def test_builtin_settings_build_spiking_modules(name):
    r = load_recipe(name)
    for i in range(len(r.targets)):
        s = r.settings_for(i)
        enc = spiking.BitPlaneEncoder(**s.encoder.kwargs())
        dec = spiking.BitPlaneDecoder(**s.decoder.kwargs())
        spiking.LIF(**s.neuron.kwargs(), time_steps=s.time_steps)
        assert enc.time_steps == dec.bits == s.time_steps
        effective = s.encoder.effective()
        for key in ("order", "normalize", "quantize", "surrogate", "alpha", "offset", "rescale"):
            assert getattr(enc.options, key) == effective[key], key


# Every combination of these encoder values: the recipe accepts exactly what the encoder accepts.
_ENCODER_CHOICES = {
    "normalize": [None, "running", "fixed"],
    "surrogate": [None, "fourier", "ste", "sigsine"],
    "alpha": [None, 0, 3, 2.5],
    "lo_hi": [None, (0.0, 1.0), (1.0, 1.0)],
    "compat": [None, "has8-released"],
    "order": [None, "msb", "lsb"],
}


def _encoder_cases():
    keys = list(_ENCODER_CHOICES)
    for values in itertools.product(*_ENCODER_CHOICES.values()):
        raw = dict(zip(keys, values, strict=True))
        kwargs = {k: v for k, v in raw.items() if k != "lo_hi" and v is not None}
        if raw["lo_hi"] is not None:
            kwargs["lo"], kwargs["hi"] = raw["lo_hi"]
        yield kwargs


def test_recipe_accepts_exactly_what_the_encoder_accepts():
    disagreements = []
    for kwargs in _encoder_cases():
        try:
            spiking.BitPlaneEncoder(**kwargs)
            module_ok = True
        except HybridizeError:
            module_ok = False
        try:
            load_recipe({"targets": [{"select": {"auto": "stem"}, "encoder": kwargs}]})
            recipe_ok = True
        except RecipeError:
            recipe_ok = False
        if module_ok != recipe_ok:
            disagreements.append((kwargs, module_ok, recipe_ok))
    assert disagreements == []
