"""inspect(): per-region counts, firing rates, gates and energy against hand-computed values."""

from __future__ import annotations

import json

import pytest
import torch

from hybridize.errors import HybridizeError
from hybridize.metrics import inspect

T = 8
# inputs k / 255: popcounts 8, 0, 1, 1 -> 10 one-bits over the 8 planes
X = torch.tensor([[255.0, 0.0, 1.0, 128.0], [3.0, 7.0, 0.0, 0.0]], dtype=torch.float32) / 255


def test_linear_block_counts_rates_gate_energy(linear_hybrid):
    report = inspect(linear_hybrid, X)
    assert report.n_samples == 2 and len(report.regions) == 1
    r = report.regions[0]
    assert (r.name, r.mode, r.time_steps) == ("0", "parallel", T)
    assert (r.params_ann, r.params_twin) == (4 * 3 + 3, 4 * 3)
    assert r.ann_macs == 4 * 3  # per image
    assert r.twin_dense_macs == T * 4 * 3
    # ACs: every 1-bit reaches 3 outputs; sample 0 has 10 one-bits, sample 1 has 2 + 3 = 5
    assert r.twin_acs == (10 + 5) * 3 / 2 and r.twin_macs == 0
    assert r.gate == [0.25]
    # spikes: neuron j fires once per 1-bit of inputs 0, 2, 3 -> sample 0: 8 + 1 + 1, sample 1: 2
    (layer,) = report.layers
    assert layer.name == "0.branch.twin.1" and layer.region == "0"
    assert (layer.time_steps, layer.neurons, layer.spikes) == (T, 3, 12)
    assert layer.rate == 12 / (T * 3 * 2) == r.firing_rate
    # energy (45 nm fp32: 4.6 pJ / MAC, 0.9 pJ / AC); the head Linear 3->2 lies outside regions
    assert report.outside_macs == 6
    assert r.energy_ann_pj == pytest.approx(12 * 4.6)
    assert r.energy_hybrid_pj == pytest.approx(12 * 4.6 + 22.5 * 0.9)
    assert report.energy_ann_pj == pytest.approx((6 + 12) * 4.6)
    assert report.energy_hybrid_pj == pytest.approx((6 + 12) * 4.6 + 22.5 * 0.9)


def test_energy_presets(linear_hybrid):
    r8 = inspect(linear_hybrid, X, energy="int8")
    assert (r8.e_mac_pj, r8.e_ac_pj) == (0.23, 0.03)
    assert r8.regions[0].energy_hybrid_pj == pytest.approx(12 * 0.23 + 22.5 * 0.03)
    assert inspect(linear_hybrid, X, energy="fp16").e_mac_pj == 1.5
    with pytest.raises(HybridizeError, match="unknown energy preset"):
        inspect(linear_hybrid, X, energy="7nm")


def test_conv_block_counts(conv_hybrid):
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0  # 255: a one in all 8 planes, reaches 9 outputs per channel
    x[0, 0, 0, 0] = 1 / 255  # one plane, a corner: reaches 4 outputs per channel
    r = inspect(conv_hybrid, x).regions[0]
    assert r.twin_acs == (8 * 9 + 1 * 4) * 2
    assert r.ann_macs == 9 * 2 * 9 and r.twin_dense_macs == T * 9 * 2 * 9
    assert r.gate == [1.0]


def test_batches_accumulate_per_image(linear_hybrid):
    one = inspect(linear_hybrid, X)
    two = inspect(linear_hybrid, [(X, torch.zeros(2)), (X, torch.zeros(2))])
    assert two.n_samples == 4
    assert two.regions[0].twin_acs == one.regions[0].twin_acs
    assert two.layers[0].spikes == 2 * one.layers[0].spikes
    assert inspect(linear_hybrid, [X, X, X], max_batches=1).n_samples == 2


def test_replace_mode(replace_model):
    report = inspect(replace_model, X)
    r = report.regions[0]
    assert (r.name, r.mode, r.ann_macs, r.gate, r.params_ann) == ("0", "replace", None, None, 0)
    assert r.twin_dense_macs == T * 12 and r.ann_equiv_macs == 12
    assert r.twin_acs == (10 + 5) * 3 / 2
    assert r.energy_ann_pj == pytest.approx(12 * 4.6)
    assert r.energy_hybrid_pj == pytest.approx(22.5 * 0.9)


def test_raster_and_json(linear_hybrid, tmp_path):
    report = inspect(linear_hybrid, X)
    (layer,) = report.raster["layers"]
    # first input, 3 neurons: neuron 0 sees 255 (fires every step), 1 sees 1 (LSB, last step
    # in MSB-first order), 2 sees 128 (MSB, first step)
    spikes = torch.tensor(layer["spikes"])
    assert spikes.shape == (T, 3)
    assert spikes[:, 0].tolist() == [1] * T
    assert spikes[:, 1].tolist() == [0] * 7 + [1]
    assert spikes[:, 2].tolist() == [1] + [0] * 7
    path = report.save_json(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["regions"][0]["twin_acs"] == 22.5 and data["energy_ann_pj"] == pytest.approx(82.8)
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_model_modes_restored_and_errors(linear_hybrid):
    linear_hybrid.train()
    inspect(linear_hybrid, X)
    assert all(m.training for m in linear_hybrid.modules())
    with pytest.raises(HybridizeError, match="no inputs"):
        inspect(linear_hybrid, [])
    with pytest.raises(HybridizeError, match="no spiking region named"):
        inspect(linear_hybrid, X, raster_region="nope")


def test_a_model_that_is_itself_a_region_has_its_rates_and_raster(conv_hybrid):
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    report = inspect(conv_hybrid, x)
    (r,) = report.regions
    (layer,) = report.layers
    assert r.name == "<model>" and layer.region == "<model>"
    assert r.firing_rate == layer.rate is not None
    assert report.raster is not None and report.raster["layers"][0]["name"] == layer.name


class _TwiceTwin(torch.nn.Module):
    """Runs one LIF on a 3-wide and then on a 2-wide input (a shared neuron layer)."""

    def __init__(self, lif: torch.nn.Module) -> None:
        super().__init__()
        self.lif = lif

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # planes in {0, 1} times 2: the LIF (tau 2, V_th 1, hard reset) spikes on every 1-bit
        first, second = self.lif(2 * x[..., :3]), self.lif(2 * x[..., 1:3])
        return first.sum(-1, keepdim=True) + second.sum(-1, keepdim=True)


def test_a_lif_run_twice_counts_every_call_and_one_raster_entry():
    from hybridize.spiking import LIF, SpikingBranch
    from tests.metrics.conftest import SumOverTime, encoder

    model = SpikingBranch(_TwiceTwin(LIF(time_steps=T)), encoder(), SumOverTime())
    x = torch.tensor([[1.0, 1.0, 0.0]])  # 255, 255, 0: planes all ones, all ones, none
    report = inspect(model, x)
    (layer,) = report.layers
    # call 1 (3 neurons): 8 + 8 + 0 spikes; call 2 (2 neurons): 8 + 0
    assert layer.spikes == 24 and (layer.time_steps, layer.neurons) == (T, 3)
    assert layer.rate == 24 / (T * 3 + T * 2)
    assert len(report.raster["layers"]) == 1


def test_a_lif_that_never_ran_has_no_rate(linear_hybrid):
    from hybridize.spiking import LIF

    linear_hybrid[0].branch.idle = LIF(time_steps=T)  # a LIF the forward never calls
    report = inspect(linear_hybrid, X)
    idle = next(a for a in report.layers if a.name.endswith("idle"))
    assert idle.rate is None and idle.spikes == 0
    assert report.regions[0].firing_rate == 12 / (T * 3 * 2)  # the idle LIF adds no slots


def test_a_bf16_model_takes_float32_inputs(linear_hybrid):
    ref = inspect(linear_hybrid, X).regions[0]
    got = inspect(linear_hybrid.to(torch.bfloat16), X).regions[0]
    assert (got.ann_macs, got.twin_dense_macs) == (ref.ann_macs, ref.twin_dense_macs)


def test_an_empty_batch_is_one_clear_error(linear_hybrid):
    with pytest.raises(HybridizeError, match="batch 0 holds no images"):
        inspect(linear_hybrid, X[:0])


def test_the_report_says_what_inputs_ran(linear_hybrid) -> None:
    report = inspect(linear_hybrid, X)
    assert report.inputs == "given" and report.to_dict()["inputs"] == "given"
