"""Bit-plane encoder forward: planes vs integer bit arithmetic, quantisers, normalisation modes,
the released LSB/MSB mismatch, presets, validation and the export path."""

from __future__ import annotations

import math

import pytest
import torch
from autograd_graph import autograd_node_names

from hybridize.errors import HybridizeError
from hybridize.spiking import (
    BitPlaneDecoder,
    BitPlaneEncoder,
    bit_planes,
    decode,
    encode,
    normalize,
)


def _int_planes(value: int, bits: int, order: str) -> list[int]:
    ks = range(bits - 1, -1, -1) if order == "msb" else range(bits)
    return [(value >> k) & 1 for k in ks]


@pytest.mark.parametrize("bits", [1, 2, 5, 8, 16])
@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_bit_planes_match_python_int_bits(bits: int, order: str) -> None:
    gen = torch.Generator().manual_seed(bits)
    ints = torch.randint(0, 2**bits, (3, 7), generator=gen)
    ints[0, 0], ints[0, 1] = 0, 2**bits - 1
    planes = bit_planes(ints.to(torch.float32), bits, order)
    assert planes.shape == (bits, 3, 7)
    for idx in range(ints.numel()):
        i, j = divmod(idx, 7)
        expected = _int_planes(int(ints[i, j]), bits, order)
        assert planes[:, i, j].tolist() == expected


def test_unrounded_lsb_plane_is_real_remainder() -> None:
    z = torch.tensor([0.25, 1.5, 2.75, 5.5, 254.9], dtype=torch.float64)
    planes = bit_planes(z, 8, "lsb")
    for i, v in enumerate(z.tolist()):
        assert planes[0, i].item() == pytest.approx(math.fmod(v, 2.0), abs=1e-12)
        for k in range(1, 8):
            assert planes[k, i].item() == (math.floor(v / 2**k) % 2)


@pytest.mark.parametrize("bits", [1, 3, 8, 12])
@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_decode_encode_exact_for_integer_z(bits: int, order: str) -> None:
    top = 2**bits - 1
    z = torch.arange(0, top + 1, dtype=torch.float64)[:: max(1, top // 200)].reshape(-1, 1)
    planes = encode(z, bits=bits, order=order, normalize="fixed", lo=0.0, hi=float(top))
    y = decode(planes, bits, order)
    assert torch.equal(torch.round(y * top), z)
    assert torch.allclose(y, z / top, rtol=0, atol=1e-12)


@pytest.mark.parametrize("quantize", ["none", "floor", "round"])
@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_decode_encode_equals_the_quantiser(quantize: str, order: str) -> None:
    r = torch.rand(5, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    planes = encode(r, bits=8, order=order, normalize="fixed", lo=0.0, hi=1.0, quantize=quantize)
    y = decode(planes, 8, order)
    z = [v * 255.0 for v in r.flatten().tolist()]
    q = {"none": lambda v: v, "floor": math.floor, "round": round}[quantize]
    expected = torch.tensor([q(v) / 255.0 for v in z], dtype=torch.float64).reshape(5, 11)
    assert torch.allclose(y, expected, rtol=0, atol=1e-12)


def test_released_mismatch_reproduces_its_known_error() -> None:
    # LSB-first encode + fixed MSB-first decode: step t = k is weighted 2^(B-1-k) / (2^B - 1).
    x = torch.tensor([[-1.0, 0.3, 2.0], [0.7, 1.234, -0.4]], dtype=torch.float64)
    enc = BitPlaneEncoder(compat="has8-released")
    dec = BitPlaneDecoder(compat="has8-released")
    y = dec(enc(x))
    lo, hi = -1.0, 2.0
    for i in range(2):
        for j in range(3):
            zv = 255.0 * (x[i, j].item() - lo) / (hi - lo)
            planes = [math.fmod(zv, 2.0)] + [math.floor(zv / 2**k) % 2 for k in range(1, 8)]
            value = sum(p * 2 ** (7 - k) for k, p in enumerate(planes)) / 255.0
            assert y[i, j].item() == pytest.approx(value, abs=1e-12)
    # integer z: the released decode bit-reverses the code (z = 1 -> 128/255)
    one = torch.tensor([[0.0, 1.0 / 255.0, 1.0]], dtype=torch.float64)
    out = dec(BitPlaneEncoder(compat="has8-released", quantize="none")(one))
    assert out[0, 1].item() == pytest.approx(128 / 255, abs=1e-9)
    assert out[0, 2].item() == pytest.approx(1.0, abs=1e-12)


def test_auto_normalisation_rules() -> None:
    inside = torch.tensor([[0.0, 0.25], [1.0, 0.5]])
    assert torch.equal(normalize(inside, "auto"), inside)
    x = torch.tensor([[-2.0, 0.0], [3.0, 0.5]], dtype=torch.float64)
    expected = torch.tensor([[(v + 2.0) / 5.0 for v in row] for row in x.tolist()])
    assert torch.allclose(normalize(x, "auto"), expected.double(), atol=1e-15)
    const = torch.full((2, 3), 3.0, requires_grad=True)
    r = normalize(const, "auto")
    assert torch.equal(r, torch.ones(2, 3))
    r.sum().backward()
    assert torch.isfinite(const.grad).all()
    half = torch.full((2, 3), 0.5)  # constant but inside [0, 1]: kept as is
    assert torch.equal(normalize(half, "auto"), half)


def test_auto_depends_on_batch_but_minmax_does_not() -> None:
    a = torch.tensor([[0.0, 2.0]])
    b = torch.tensor([[10.0, -4.0]])
    both = torch.cat([a, b])
    assert not torch.allclose(normalize(both, "auto")[:1], normalize(a, "auto"))
    assert torch.equal(normalize(both, "minmax")[:1], normalize(a, "minmax"))
    assert torch.equal(normalize(a, "minmax"), torch.tensor([[0.0, 1.0]]))


def test_fixed_clamps() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0, 5.0])
    assert torch.equal(normalize(x, "fixed", lo=0.0, hi=2.0), torch.tensor([0, 0, 0.5, 1, 1.0]))


def test_running_ema_eval_batch_independence_and_state_dict() -> None:
    m = 0.25
    enc = BitPlaneEncoder(normalize="running", momentum=m, quantize="none")
    batches = [torch.tensor([[0.0, 4.0]]), torch.tensor([[-2.0, 2.0]]), torch.tensor([[1.0, 8.0]])]
    lo, hi = None, None
    for x in batches:
        enc(x)
        blo, bhi = x.min().item(), x.max().item()
        lo = blo if lo is None else (1 - m) * lo + m * blo
        hi = bhi if hi is None else (1 - m) * hi + m * bhi
    assert enc.running_min.item() == pytest.approx(lo)
    assert enc.running_max.item() == pytest.approx(hi)
    assert enc.num_batches_tracked.item() == 3
    # training normalises with the batch range: the batch max maps to all-ones planes
    planes = enc(torch.tensor([[3.0, 7.0]]))
    assert torch.equal(planes[:, 0, 1], torch.ones(8))
    enc.eval()
    sample = torch.tensor([[0.5, 3.0]])
    alone = enc(sample)
    with_others = enc(torch.cat([sample, torch.tensor([[-100.0, 100.0]])]))[:, :1]
    assert torch.equal(alone, with_others)
    rlo, rhi = enc.running_min.item(), enc.running_max.item()
    z = [255.0 * min(max((v - rlo) / (rhi - rlo), 0.0), 1.0) for v in sample[0].tolist()]
    y = decode(alone, 8, "msb")
    assert torch.allclose(y[0], torch.tensor(z) / 255.0, atol=1e-5)
    fresh = BitPlaneEncoder(normalize="running", momentum=m, quantize="none")
    fresh.load_state_dict(enc.state_dict())
    fresh.eval()
    assert torch.equal(fresh(sample), alone)
    assert set(enc.state_dict()) == {"running_min", "running_max", "num_batches_tracked"}


def test_eval_frozen_running_stats_do_not_move() -> None:
    enc = BitPlaneEncoder(normalize="running")
    enc(torch.randn(4, 3))
    before = enc.state_dict()
    enc.eval()
    enc(torch.randn(4, 3) * 10)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_output_layout_dtype_and_time_steps() -> None:
    enc = BitPlaneEncoder(bits=6)
    assert enc.time_steps == 6
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        x = torch.randn(2, 3, 4).to(dtype)
        out = enc(x)
        assert out.shape == (6, 2, 3, 4) and out.dtype == dtype


def test_bf16_input_is_encoded_in_float32() -> None:
    # bf16 has 8 significant bits: 255 * r would round; planes must equal the float32 ones
    x = torch.rand(64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    enc = BitPlaneEncoder(normalize="fixed", lo=0.0, hi=1.0, quantize="floor", bits=12)
    ref = enc(x.float())
    assert torch.equal(enc(x).float(), ref)


@pytest.mark.parametrize("compat", [None, "has8-released"])
def test_export_mode_same_forward_standard_ops(compat: str | None) -> None:
    enc = BitPlaneEncoder(compat=compat) if compat else BitPlaneEncoder(normalize="minmax")
    x = torch.randn(3, 4, 5, requires_grad=True)
    train_out = enc(x)
    assert "_BitPlaneFunctionBackward" in autograd_node_names(train_out)
    enc.export_mode = True
    export_out = enc(x)
    assert torch.equal(train_out, export_out)
    assert "_BitPlaneFunctionBackward" not in autograd_node_names(export_out)
    enc.export_mode = False
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(x), train_out)


def test_torch_export_round_trip() -> None:
    # train mode with a parameter needing grad still exports; auto normalisation must stay
    # data-dependent (no min/max baked in)
    from torch import nn

    from hybridize.spiking import LIF

    model = nn.Sequential(
        BitPlaneEncoder(compat="has8-released"),
        LIF(learnable_tau=True),
        BitPlaneDecoder(compat="has8-released"),
    )
    exported = torch.export.export(model, (torch.randn(2, 5),))
    y = torch.randn(2, 5) * 7 + 3
    assert torch.equal(exported.module()(y), model(y))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 0},
        {"bits": 17},
        {"order": "middle"},
        {"normalize": "zscore"},
        {"quantize": "ceil"},
        {"surrogate": "cosine"},
        {"rescale": "inverse"},
        {"surrogate": "fourier", "alpha": 2.5},
        {"surrogate": "ste", "alpha": 3},
        {"normalize": "fixed", "lo": 1.0},
        {"normalize": "fixed", "lo": 1.0, "hi": 1.0},
        {"normalize": "auto", "lo": 0.0, "hi": 1.0},
        {"momentum": 0.0},
        {"compat": "has8"},
        {"compat": "has8-released", "order": "msb"},
        {"compat": "has8-released", "quantize": "round"},
        {"compat": "has8-released", "offset": 0.0},
    ],
)
def test_invalid_options_raise_one_line_errors(kwargs: dict) -> None:
    with pytest.raises(HybridizeError) as info:
        BitPlaneEncoder(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("BitPlaneEncoder")


def test_error_lists_allowed_values() -> None:
    with pytest.raises(HybridizeError, match="choose one of: fourier, sigsine, tanhsine, ste"):
        BitPlaneEncoder(surrogate="x")


def test_compat_preset_values() -> None:
    o = BitPlaneEncoder(compat="has8-released", order="lsb").options
    assert (o.order, o.normalize, o.quantize, o.surrogate, o.alpha, o.offset, o.rescale) == (
        "lsb",
        "auto",
        "none",
        "fourier",
        5,
        0.5,
        "order-aware",
    )
    d = BitPlaneEncoder().options
    assert (d.order, d.normalize, d.quantize, d.surrogate, d.alpha, d.rescale) == (
        "msb",
        "running",
        "round",
        "fourier",
        5,
        "order-aware",
    )
    assert BitPlaneEncoder(surrogate="ste").options.rescale == "none"
    assert BitPlaneEncoder(surrogate="sigsine").options.alpha == -10
    with pytest.raises(HybridizeError):
        BitPlaneDecoder(compat="has8-released", order="lsb")
