"""Schema behaviour: selectors, settings merging, kwargs, round trips, cross-field checks."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridize.errors import HybridizeError, RecipeError
from hybridize.recipe import (
    AUTO_KINDS,
    BlockSettings,
    DecoderSettings,
    EncoderSettings,
    NeuronSettings,
    Recipe,
    Selector,
    load_recipe,
)

STEM = {"auto": "stem"}


def recipe(*targets: dict, **top: object) -> Recipe:
    return load_recipe({"targets": list(targets), **top})


def test_recipe_error_is_a_user_error():
    assert issubclass(RecipeError, HybridizeError)


@pytest.mark.parametrize(
    ("select", "kind", "patterns", "described"),
    [
        ({"name": "layer4.*"}, "name", ["layer4.*"], "name: 'layer4.*'"),
        ({"name": ["a.*", "b"]}, "name", ["a.*", "b"], "name: ['a.*', 'b']"),
        ({"type": "timm.layers.BatchNormAct2d"}, "type", ["timm.layers.BatchNormAct2d"], None),
        (
            {"segment": {"start": "conv1", "end": "maxpool"}},
            "segment",
            [],
            "segment: conv1..maxpool",
        ),
        ({"auto": "last-stage"}, "auto", [], "auto: last-stage"),
    ],
)
def test_selector_kinds(select, kind, patterns, described):
    sel = Selector.model_validate(select)
    assert sel.kind == kind
    assert sel.patterns == patterns
    if described is not None:
        assert sel.describe() == described
    assert sel.to_dict() == select


@pytest.mark.parametrize(
    "select",
    [{}, {"name": "a", "auto": "stem"}, {"type": "A", "segment": {"start": "x", "end": "y"}}],
)
def test_selector_needs_exactly_one_key(select):
    with pytest.raises(RecipeError, match=r"targets\[0\]\.select: set exactly one of"):
        recipe({"select": select})


def test_auto_kinds_are_the_documented_six():
    assert set(AUTO_KINDS) == {"stem", "blocks", "stages", "last-stage", "head", "conv-groups"}


def test_defaults_when_nothing_is_written():
    r = recipe({"select": STEM})
    s = r.settings_for(0)
    assert (s.mode, s.twin_init, s.gate, s.gate_shape) == ("parallel", "fresh", "fixed", "scalar")
    assert (s.pooling, s.residual, s.bn_momentum, s.gate_init) == ("max-to-avg", "sew", None, None)
    assert r.targets[0].required is True
    assert s.encoder.kwargs() == {} and s.neuron.kwargs() == {} and s.decoder.kwargs() == {}
    assert r.trace.leaf_modules == [] and r.autowrap_functions == []


@pytest.mark.parametrize(
    ("gate", "gate_init", "expected"),
    [("fixed", None, 1.0), ("learnable", None, 0.0), ("fixed", 0.5, 0.5), ("learnable", -2, -2.0)],
)
def test_gate_init_value(gate, gate_init, expected):
    s = BlockSettings(gate=gate, gate_init=gate_init)
    assert s.gate_init_value() == expected


def test_kwargs_returns_only_written_keys_including_explicit_nulls():
    enc = EncoderSettings.model_validate({"bits": 4, "rescale": None})
    assert enc.kwargs() == {"bits": 4, "rescale": None}
    neuron = NeuronSettings.model_validate({"v_reset": None, "tau": 3})
    assert neuron.kwargs() == {"v_reset": None, "tau": 3.0}
    assert DecoderSettings.model_validate({"kind": "rate"}).kwargs() == {"kind": "rate"}


def test_settings_merge_scalars_override_and_dicts_merge_key_by_key():
    r = recipe(
        {"select": STEM},
        {
            "select": {"name": "layer4.*"},
            "mode": "replace",
            "encoder": {"order": "lsb"},
            "neuron": {"tau": 4.0},
        },
        defaults={
            "gate": "learnable",
            "encoder": {"bits": 4, "quantize": "floor"},
            "neuron": {"v_reset": None},
        },
    )
    first, second = r.settings_for(0), r.settings_for(1)
    assert first.mode == "parallel" and second.mode == "replace"
    assert first.gate == second.gate == "learnable"
    assert first.encoder.kwargs() == {"bits": 4, "quantize": "floor"}
    assert second.encoder.kwargs() == {"bits": 4, "quantize": "floor", "order": "lsb"}
    assert second.neuron.kwargs() == {"v_reset": None, "tau": 4.0}
    # the decoder follows the encoder: T = B and the same plane order
    assert first.decoder.kwargs() == {"bits": 4}
    assert second.decoder.kwargs() == {"bits": 4, "order": "lsb"}
    assert first.time_steps == second.time_steps == 4
    # the targets themselves keep only what they wrote
    assert r.targets[0].overrides() == {}
    assert set(r.targets[1].overrides()) == {"mode", "encoder", "neuron"}


def test_target_can_override_to_null():
    r = recipe(
        {"select": STEM, "gate_init": None, "bn_momentum": None},
        defaults={"gate_init": 0.25, "bn_momentum": 0.3},
    )
    s = r.settings_for(0)
    assert s.gate_init is None and s.bn_momentum is None


def test_decoder_compat_follows_encoder_compat():
    r = recipe({"select": STEM, "encoder": {"compat": "has8-released"}})
    assert r.settings_for(0).decoder.kwargs() == {"compat": "has8-released"}


def test_targets_keep_their_order_for_last_wins():
    targets = [
        {"select": {"auto": "blocks"}, "mode": "parallel"},
        {"select": {"name": "layer4.*"}, "mode": "skip"},
        {"select": {"name": "layer4.1"}, "mode": "replace", "required": False},
    ]
    r = recipe(*targets)
    assert [t.select.describe() for t in r.targets] == [
        "auto: blocks",
        "name: 'layer4.*'",
        "name: 'layer4.1'",
    ]
    assert [r.settings_for(i).mode for i in range(3)] == ["parallel", "skip", "replace"]
    assert [t.required for t in r.targets] == [True, True, False]
    assert load_recipe(r.to_dict()).targets == r.targets


@pytest.mark.parametrize(
    ("section", "values", "fragment"),
    [
        ("encoder", {"bits": 4}, None),
        ("decoder", {"bits": 5}, "decoder.bits: 5 does not match encoder.bits 8"),
        (
            "encoder",
            {"bits": 6, "_decoder_bits": 4},
            "decoder.bits: 4 does not match encoder.bits 6",
        ),
        ("decoder", {"order": "lsb"}, "decoder.order: 'lsb' does not match encoder.order 'msb'"),
        ("encoder", {"normalize": "fixed"}, "'fixed' needs a range with lo < hi"),
        ("encoder", {"normalize": "fixed", "lo": 1, "hi": 1}, "'fixed' needs a range with lo < hi"),
        ("encoder", {"normalize": "fixed", "lo": -1, "hi": 1}, None),
        ("encoder", {"lo": 0, "hi": 1}, "only apply to normalize 'fixed'"),
        ("encoder", {"compat": "has8-released", "quantize": "round"}, "contradicts compat"),
        ("encoder", {"compat": "has8-released", "order": "lsb"}, None),
        ("encoder", {"surrogate": "ste", "alpha": 1}, "'ste' surrogate takes no alpha"),
        ("encoder", {"alpha": 2.5}, "not a harmonic count"),
        ("encoder", {"alpha": 3}, None),
        ("encoder", {"surrogate": "sigsine", "alpha": 0}, "0 gives no gradient"),
        ("encoder", {"surrogate": "tanhsine", "alpha": -4.5}, None),
        ("neuron", {"v_reset": 1.0}, "neuron.v_reset: 1.0 must be below neuron.v_threshold 1.0"),
        ("neuron", {"v_reset": 0.5, "v_threshold": 0.75}, None),
    ],
)
def test_cross_field_checks(section, values, fragment):
    values = dict(values)
    target: dict = {"select": STEM}
    if "_decoder_bits" in values:
        target["decoder"] = {"bits": values.pop("_decoder_bits")}
    target[section] = values
    if fragment is None:
        recipe(target)
    else:
        with pytest.raises(RecipeError) as info:
            recipe(target)
        assert fragment in str(info.value)
        assert "targets[0]" in str(info.value)
        assert "\n" not in str(info.value)


def test_cross_field_check_sees_merged_settings():
    # neither half is valid alone; merged they are
    r = recipe(
        {"select": STEM, "encoder": {"lo": 0.0, "hi": 2.0}},
        defaults={"encoder": {"normalize": "fixed"}},
    )
    assert r.settings_for(0).encoder.kwargs() == {"normalize": "fixed", "lo": 0.0, "hi": 2.0}
    with pytest.raises(RecipeError, match=r"targets\[1\]"):
        recipe(
            {"select": STEM, "encoder": {"lo": 0.0, "hi": 2.0}},
            {"select": {"auto": "head"}},
            defaults={"encoder": {"normalize": "fixed"}},
        )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("encoder", "bits", 0),
        ("encoder", "bits", 17),
        ("encoder", "bits", True),
        ("encoder", "bits", 4.0),
        ("encoder", "momentum", 0.0),
        ("encoder", "momentum", 1.5),
        ("encoder", "offset", float("nan")),
        ("neuron", "tau", 1.0),
        ("neuron", "tau", "2"),
        ("neuron", "v_threshold", 0),
        ("neuron", "alpha", -1),
        ("neuron", "decay_input", 1),
        ("decoder", "bits", 0),
        (None, "bn_momentum", 0.0),
        (None, "bn_momentum", 1.01),
        (None, "gate_init", float("inf")),
        (None, "required", "yes"),
    ],
)
def test_out_of_range_values_are_rejected(section, key, value):
    target: dict = {"select": STEM}
    if section is None:
        target[key] = value
    else:
        target[section] = {key: value}
    with pytest.raises(RecipeError) as info:
        recipe(target)
    path = f"targets[0].{section + '.' if section else ''}{key}"
    assert f": {path}: " in str(info.value)


def test_time_steps_is_not_a_neuron_key():
    with pytest.raises(RecipeError, match="T always equals encoder.bits"):
        recipe({"select": STEM, "neuron": {"time_steps": 4}})


def test_bn_momentum_accepts_the_papers_value():
    r = recipe({"select": STEM, "bn_momentum": 0.1**0.5})
    assert r.settings_for(0).bn_momentum == pytest.approx(0.316227766)


def test_trace_settings():
    r = recipe(
        {"select": STEM},
        trace={
            "leaf_modules": ["timm.layers.BatchNormAct2d", "Mlp"],
            "autowrap_functions": ["torch.roll"],
        },
    )
    assert r.leaf_modules == ["timm.layers.BatchNormAct2d", "Mlp"]
    assert r.autowrap_functions == ["torch.roll"]
    with pytest.raises(RecipeError, match="trace.autowrap_functions: 'roll'"):
        recipe({"select": STEM}, trace={"autowrap_functions": ["roll"]})
    with pytest.raises(RecipeError, match="trace.leaf_modules: 'timm layers'"):
        recipe({"select": STEM}, trace={"leaf_modules": ["timm layers"]})


def test_models_are_immutable():
    r = recipe({"select": STEM})
    with pytest.raises(ValueError):
        r.name = "other"  # type: ignore[misc]


# --- property: any valid recipe round-trips through to_dict and to_yaml ----------------------

_encoder = st.fixed_dictionaries(
    {},
    optional={
        "bits": st.integers(1, 16),
        "order": st.sampled_from(["msb", "lsb", None]),
        "quantize": st.sampled_from(["none", "floor", "round"]),
        "momentum": st.floats(0.01, 1.0),
        "offset": st.floats(-1, 1),
    },
)
_neuron = st.fixed_dictionaries(
    {},
    optional={
        "tau": st.floats(1.01, 100),
        "v_reset": st.sampled_from([None, 0.0, -0.5]),
        "surrogate": st.sampled_from(["atan", "sigmoid", "rect", "triangle"]),
        "detach_reset": st.booleans(),
    },
)
_overrides = st.fixed_dictionaries(
    {
        "select": st.one_of(
            st.builds(lambda k: {"auto": k}, st.sampled_from(AUTO_KINDS)),
            st.builds(lambda n: {"name": n}, st.sampled_from(["layer*", "blocks.?", "head"])),
            st.just({"type": "timm.models.resnet.BasicBlock"}),
            st.just({"segment": {"start": "conv1", "end": "maxpool"}}),
        )
    },
    optional={
        "required": st.booleans(),
        "mode": st.sampled_from(["parallel", "replace", "skip"]),
        "gate": st.sampled_from(["fixed", "learnable"]),
        "gate_init": st.one_of(st.none(), st.floats(-2, 2)),
        "bn_momentum": st.one_of(st.none(), st.floats(0.01, 1.0)),
        "encoder": _encoder,
        "neuron": _neuron,
    },
)


@settings(max_examples=60, deadline=None)
@given(
    defaults=st.fixed_dictionaries(
        {}, optional={"encoder": _encoder, "neuron": _neuron, "twin_init": st.just("copy")}
    ),
    targets=st.lists(_overrides, min_size=1, max_size=4),
)
def test_round_trip_property(defaults, targets):
    r = load_recipe({"name": "prop", "defaults": defaults, "targets": targets})
    again = load_recipe(r.to_dict())
    assert again == r
    assert again.to_dict() == r.to_dict()
    assert load_recipe(yaml.safe_load(r.to_yaml())) == r
    for i, target in enumerate(targets):
        merged = r.settings_for(i)
        # a key written by the target wins over defaults; others come from defaults
        for section in ("encoder", "neuron"):
            expected = {**defaults.get(section, {}), **target.get(section, {})}
            got = getattr(merged, section).kwargs()
            assert {k: got[k] for k in expected} == pytest.approx(expected)
        assert merged.decoder.bits == merged.encoder.bits
