"""hybridize.spiking.options: the one source of the spiking modules' options and rules."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from dataclasses import FrozenInstanceError, asdict, fields
from typing import get_args

import pytest
import torch

from hybridize.errors import SpikingConfigError
from hybridize.spiking import (
    ENCODER_SURROGATES,
    LIF,
    SPIKE_SURROGATES,
    BitPlaneEncoder,
    lif_multistep,
    lif_step,
    options,
)
from hybridize.spiking.options import (
    DEFAULT_DECODER,
    DEFAULT_ENCODER,
    DEFAULT_NEURON,
    DecoderOptions,
    EncoderOptions,
    NeuronOptions,
    OptionError,
)


def test_options_import_without_torch():
    code = (
        "import sys\n"
        "from hybridize.spiking.options import resolve_encoder\n"
        "resolve_encoder(compat='has8-released')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_surrogate_tables_are_the_options_tables():
    assert tuple(ENCODER_SURROGATES) == get_args(options.EncoderSurrogateName)
    assert tuple(options.ENCODER_SURROGATE_ALPHA) == get_args(options.EncoderSurrogateName)
    assert tuple(SPIKE_SURROGATES) == get_args(options.SpikeSurrogateName)
    for name, spec in ENCODER_SURROGATES.items():
        assert spec.default_alpha == options.ENCODER_SURROGATE_ALPHA[name]
        assert spec.period_mean is options.ENCODER_PERIOD_MEAN[name]
    for name, spec in SPIKE_SURROGATES.items():
        assert spec.default_alpha == options.SPIKE_SURROGATE_ALPHA[name]


def test_defaults_and_the_compat_preset():
    # the public contract (docs/spiking.md): written out by hand, not read from the module
    assert asdict(DEFAULT_ENCODER) == {
        "bits": 8, "order": "msb", "normalize": "running", "quantize": "round",
        "surrogate": "fourier", "alpha": 5, "offset": 0.5, "rescale": "order-aware", "lo": None,
        "hi": None, "momentum": 0.1, "compat": None, "gain": "raw",
    }  # fmt: skip
    assert asdict(DEFAULT_NEURON) == {
        "tau": 2.0, "v_threshold": 1.0, "v_reset": 0.0, "decay_input": True,
        "detach_reset": False, "surrogate": "atan", "alpha": 2.0, "learnable_tau": False,
    }  # fmt: skip
    assert asdict(DEFAULT_DECODER) == {
        "bits": 8,
        "order": "msb",
        "kind": "bitplane",
        "compat": None,
    }
    released = options.resolve_encoder(compat="has8-released")
    assert {k: getattr(released, k) for k in options.HAS8_RELEASED_ENCODER} == dict(
        options.HAS8_RELEASED_ENCODER
    )
    assert (released.order, released.normalize, released.quantize) == ("lsb", "auto", "none")
    assert options.resolve_encoder(surrogate="ste").rescale == "none"
    assert options.resolve_encoder(surrogate="ste").alpha is None
    assert options.resolve_neuron(surrogate="sigmoid").alpha == 4.0


@pytest.mark.parametrize("cls", [EncoderOptions, NeuronOptions, DecoderOptions])
def test_options_are_frozen_and_round_trip(cls):
    opts = cls()
    with pytest.raises(FrozenInstanceError):
        opts.bits = 4  # type: ignore[misc]
    assert cls(**asdict(opts)) == opts
    assert [f.name for f in fields(cls)] == list(asdict(opts))


@pytest.mark.parametrize(
    ("resolve", "kwargs", "expected"),
    [
        (
            options.resolve_encoder,
            {"bits": 0},
            "BitPlaneEncoder: bits=0 is invalid; use an integer in 1..16",
        ),
        (
            options.resolve_encoder,
            {"momentum": 1.5},
            "momentum=1.5 is invalid; give a finite number > 0 and <= 1",
        ),
        (
            options.resolve_encoder,
            {"order": "middle"},
            "order='middle' is not allowed; choose one of: msb, lsb",
        ),
        (
            options.resolve_encoder,
            {"compat": "has8-released", "gain": "unit"},
            "gain='unit' contradicts compat 'has8-released' (which sets gain='raw'); "
            "drop gain or compat",
        ),
        (
            options.resolve_encoder,
            {"lo": 0.0},
            "lo/hi only apply to normalize 'fixed' (got 'running'); drop lo/hi or set "
            "normalize to 'fixed'",
        ),
        (
            options.resolve_encoder,
            {"colour": 1},
            "colour is not an option; use: bits, order, normalize",
        ),
        (options.resolve_neuron, {"tau": 1.0}, "LIF: tau=1.0 is invalid; give a finite number > 1"),
        (
            options.resolve_neuron,
            {"v_threshold": 0.0},
            "v_threshold=0.0 is invalid; give a finite number > 0",
        ),
        (options.resolve_neuron, {"v_reset": 2.0}, "v_reset=2.0 must be below v_threshold 1.0"),
        (
            options.resolve_neuron,
            {"detach_reset": "yes"},
            "detach_reset='yes' is invalid; give true or false",
        ),
        (
            options.resolve_decoder,
            {"compat": "has8-released", "order": "lsb"},
            "order='lsb' contradicts compat",
        ),
    ],
)
def test_errors_are_one_line_and_name_the_owner_key_and_value(resolve, kwargs, expected):
    owner = {"resolve_encoder": "BitPlaneEncoder", "resolve_neuron": "LIF"}.get(
        resolve.__name__, "BitPlaneDecoder"
    )
    with pytest.raises(OptionError) as info:
        resolve(owner, **kwargs)
    message = str(info.value)
    assert expected in message and message.startswith(f"{owner}: ") and "\n" not in message
    assert isinstance(info.value, SpikingConfigError)
    assert str(pickle.loads(pickle.dumps(info.value))).endswith(str(info.value).split(": ", 1)[1])


def test_recipe_text_names_other_options_by_their_section():
    with pytest.raises(OptionError) as info:
        options.resolve_neuron(v_reset=1.0, v_threshold=0.5)
    assert info.value.key == "v_reset"
    assert info.value.located("neuron.").startswith("1.0 must be below neuron.v_threshold 0.5")


@pytest.mark.parametrize("tau", [1.25, 2.0, 7.0])
def test_tau_is_a_leak_time_constant(tau):
    # below threshold the membrane keeps 1 - 1/tau of its distance to rest per step: one input
    # pulse X at t = 0 leaves H_t = (X / tau) (1 - 1/tau)^t (decay_input); tau > 1 is the rule
    # that makes this a leak (tau = 1 forgets at once, tau < 1 overshoots rest and oscillates)
    x = torch.zeros(6, 1, dtype=torch.float64)
    x[0] = 1.0
    assert torch.equal(LIF(tau=tau, v_threshold=10.0).double()(x), torch.zeros_like(x))
    v, membrane = torch.zeros(1, dtype=torch.float64), []
    for t in range(6):
        _, v = lif_step(x[t], v, tau=tau, v_threshold=10.0)  # never fires: V_t = H_t
        membrane.append(v.item())
    assert membrane == pytest.approx([(1 / tau) * (1 - 1 / tau) ** t for t in range(6)], rel=1e-12)
    for bad in (1.0, 0.75, 0.25):
        with pytest.raises(SpikingConfigError, match="> 1"):
            LIF(tau=bad)


def test_plif_decay_logit_and_old_checkpoints():
    lif = LIF(learnable_tau=True, tau=3.0).double()
    assert lif.decay_logit.item() == pytest.approx(-math.log(2.0))
    assert lif.tau.item() == pytest.approx(3.0)  # 1 / sigmoid(decay_logit)
    assert 1 / lif.tau.item() == pytest.approx(torch.sigmoid(lif.decay_logit).item())
    # a state dict written before the rename names the parameter "w"
    old = {"w": torch.tensor(0.25, dtype=torch.float64)}
    lif.load_state_dict(old)
    assert lif.decay_logit.item() == 0.25 and list(lif.state_dict()) == ["decay_logit"]
    with pytest.raises(RuntimeError, match="w"):
        LIF().load_state_dict(old)  # a plain LIF has no parameter to take it


def test_lif_multistep_takes_lif_step_defaults():
    x = torch.tensor([[0.8], [0.9], [0.1], [1.5]])
    explicit = lif_multistep(x, tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=True)
    assert torch.equal(lif_multistep(x), explicit)
    assert torch.equal(LIF()(x), explicit)


def test_modules_read_their_options():
    enc = BitPlaneEncoder(compat="has8-released")
    assert (enc.bits, enc.order) == (8, "lsb")
    with pytest.raises(AttributeError):
        enc.bits = 4  # the options are frozen: build a new module instead
