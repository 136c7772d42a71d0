"""HAS-8 reference blocks, released compat vs cleaned-up defaults (METHOD.md sections 2-5).

The blocks are taken from real converted reference models (``has8_vgg_b16`` head, a
``has8_resnet_b32`` basic block) and driven through one active element: every weight is zero
except one path, so the block's output and its input gradient can be computed by hand in plain
Python floats (bit planes by floor/mod, the LIF recurrence step by step, BPTT written out, the
Fourier surrogate as METHOD.md writes it). The tests/spiking suite covers the modules alone;
these pin how the recipe wires them into the paper's blocks, quirks included: LSB-first planes
decoded with MSB-first weights, no rounding (a real-valued P_0), batch min-max ("auto")
normalisation, the +1/2 Fourier offset with order-aware rescaling, and per-element gradients
for a rank-2 (linear head) input.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from torch import nn

from hybridize.models import create
from hybridize.recipe import load_recipe
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock

BITS = 8
TOP = 2**BITS - 1
TAU = 2.0
ALPHA_ATAN = 2.0
BN_SCALE = 1 / math.sqrt(1 + 1e-5)  # eval BatchNorm with mean 0, var 1, weight 1, bias 0


# ---- the maths by hand, in plain floats ------------------------------------------------------


def planes_by_hand(z: float, order: str, quantize: str) -> list[float]:
    """Time-ordered planes: P_k = floor(z / 2^k) mod 2 (k >= 1), P_0 = z mod 2."""
    q = {"none": z, "round": float(round(z)), "floor": float(math.floor(z))}[quantize]
    by_k = [math.fmod(q, 2.0)] + [float(math.floor(q / 2**k) % 2) for k in range(1, BITS)]
    return by_k if order == "lsb" else by_k[::-1]


def significance(order: str) -> list[int]:
    return list(range(BITS)) if order == "lsb" else list(range(BITS - 1, -1, -1))


def fourier_d(z: float, k: int, offset: float, harmonics: int = 5) -> float:
    u = math.pi * z / 2**k
    return offset - (2 / 2**k) * sum(math.cos(n * u) for n in range(1, 2 * harmonics, 2))


def rescale_factor(k: int) -> float:
    return k / 2 ** (BITS - 1 - k)


def msb_weights() -> list[float]:
    """The decoder weight of step t when t = 0 is the most significant plane."""
    return [2 ** (BITS - 1 - t) / TOP for t in range(BITS)]


def lif_forward(xs: list[float]) -> tuple[list[float], list[float]]:
    """Hard-reset LIF (tau 2, V_th 1, V_reset 0, decay_input): membrane H_t and spikes S_t."""
    v, hs, ss = 0.0, [], []
    for x in xs:
        h = v + (x - v) / TAU
        s = 1.0 if h >= 1.0 else 0.0
        v = h * (1 - s)
        hs.append(h)
        ss.append(s)
    return hs, ss


def atan_grad(h: float) -> float:
    return (ALPHA_ATAN / 2) / (1 + (math.pi / 2 * ALPHA_ATAN * (h - 1.0)) ** 2)


def lif_backward(hs: list[float], ss: list[float], g_spikes: list[float]) -> list[float]:
    """BPTT through the recurrence above; the reset is not detached (SpikingJelly default)."""
    g_x = [0.0] * len(hs)
    g_v = 0.0  # dL/dV_t arriving from step t + 1
    for t in range(len(hs) - 1, -1, -1):
        h, s, sg = hs[t], ss[t], atan_grad(hs[t])
        g_h = g_spikes[t] * sg + g_v * ((1 - s) - h * sg)  # V_t = H_t (1 - S_t(H_t))
        g_x[t] = g_h / TAU
        g_v = g_h * (1 - 1 / TAU)
    return g_x


def encoder_grad(z: float, g_planes: list[float], order: str, offset: float) -> float:
    """dL/dz = sum_k g_k F_k d_k(z), at the unrounded z (METHOD.md 3)."""
    return sum(
        g * rescale_factor(k) * fourier_d(z, k, offset)
        for g, k in zip(g_planes, significance(order), strict=True)
    )


def leaky(v: float) -> float:
    return v if v >= 0 else 0.01 * v


# ---- building the blocks ---------------------------------------------------------------------


def _fusion(model: nn.Module, name: str) -> FusionBlock:
    block = model.get_submodule(name)
    assert isinstance(block, FusionBlock)
    return block


def _zero_(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()


def _by_hand(recipe: str) -> str | dict:
    """The formulas here are the released surrogate's (raw gain): pin it on "has8", whose
    default is now the unit gain (a pure rescale of the same backward)."""
    if recipe != "has8":
        return recipe
    pinned = load_recipe("has8").to_dict()
    pinned["defaults"]["encoder"] = {**(pinned["defaults"].get("encoder") or {}), "gain": "raw"}
    return pinned


def vgg_head(recipe: str, w_ann: tuple, w_twin: tuple) -> FusionBlock:
    """The has8_vgg_b16 head block, float64, with one path per branch: unit 0 -> 0 -> 0."""
    model = create("has8_vgg_b16", num_classes=2, in_chans=1, recipe=_by_hand(recipe))
    head = _fusion(model, "head").double()
    for branch, ws in ((head.ann, w_ann), (head.branch.twin, w_twin)):
        _zero_(branch)
        with torch.no_grad():
            for fc, w in zip((branch.fc1, branch.fc2, branch.fc3), ws, strict=True):
                fc.weight[0, 0] = w
    return head


def resnet_block(recipe: str, c1: float, c2: float) -> FusionBlock:
    """has8_resnet_b32 ``layer1.1`` (32 -> 32, identity shortcut), float64, eval-mode BN.

    ANN convs are zero, so the ANN branch is relu(x); the twin's convs keep one centre tap
    from channel 0 to channel 0 (on a 1x1 input a 3x3 conv with padding 1 sees only it).
    """
    model = create("has8_resnet_b32", num_classes=2, in_chans=1, recipe=_by_hand(recipe))
    block = _fusion(model, "layer1.1").double().eval()
    for conv in (block.ann.conv1, block.ann.conv2):
        with torch.no_grad():
            conv.weight.zero_()
    twin_convs = [m for m in block.branch.twin.modules() if isinstance(m, nn.Conv2d)]
    assert len(twin_convs) == 2  # no downsample conv on this block
    for conv, c in zip(twin_convs, (c1, c2), strict=True):
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = c
    return block


def set_running_range(block: FusionBlock, lo: float, hi: float) -> None:
    enc = block.branch.encoder
    with torch.no_grad():
        enc.running_min.fill_(lo)
        enc.running_max.fill_(hi)
        enc.num_batches_tracked.fill_(1)
    enc.eval()


# ---- presets on every block of the reference models -----------------------------------------

RELEASED = {
    "order": "lsb", "normalize": "auto", "quantize": "none", "surrogate": "fourier",
    "alpha": 5, "offset": 0.5, "rescale": "order-aware", "compat": "has8-released",
}  # fmt: skip
CLEANED = {
    "order": "msb", "normalize": "running", "quantize": "round", "surrogate": "fourier",
    "alpha": 5, "offset": 0.5, "rescale": "order-aware", "compat": None,
}  # fmt: skip


@pytest.mark.parametrize("name", ["has8_vgg_b16", "has8_resnet_b32"])
@pytest.mark.parametrize("recipe,expected", [("has8-released", RELEASED), ("has8", CLEANED)])
def test_every_block_gets_the_preset(name: str, recipe: str, expected: dict) -> None:
    model = create(name, num_classes=3, in_chans=1, recipe=recipe)
    blocks = [m for m in model.modules() if isinstance(m, FusionBlock)]
    assert len(blocks) == (6 if "vgg" in name else 9)
    for block in blocks:
        enc, dec = block.branch.encoder, block.branch.decoder
        assert isinstance(enc, BitPlaneEncoder) and isinstance(dec, BitPlaneDecoder)
        opts = enc.options
        assert {k: getattr(opts, k) for k in expected} == expected
        assert opts.bits == BITS
        # the decoder weights step 0 as most significant in both presets
        assert dec.order == "msb" and dec.kind == "bitplane"
        assert dec.compat == expected["compat"]
        assert isinstance(block.gate, torch.Tensor) and not isinstance(block.gate, nn.Parameter)
        assert block.gate.item() == 1.0
        lifs = [m for m in block.branch.twin.modules() if isinstance(m, LIF)]
        assert lifs and all(m.time_steps == BITS for m in lifs)


# ---- VGG head (rank-2 input), released ------------------------------------------------------

W_ANN = (0.8, -1.5, 2.0)
W_TWIN = (2.6, 2.5, 2.5)


def _twin_chain_by_hand(planes: list[float], w: tuple, dec_w: list[float]) -> tuple[float, list]:
    """Linear-LIF x3 on one unit (biases zero): decoded output and dL/dplanes for L = y."""
    h1, s1 = lif_forward([w[0] * p for p in planes])
    h2, s2 = lif_forward([w[1] * s for s in s1])
    h3, s3 = lif_forward([w[2] * s for s in s2])
    y = sum(wt * s for wt, s in zip(dec_w, s3, strict=True))
    g3 = lif_backward(h3, s3, dec_w)
    g2 = lif_backward(h2, s2, [w[2] * g for g in g3])
    g1 = lif_backward(h1, s1, [w[1] * g for g in g2])
    return y, [w[0] * g for g in g1]


def _ann_chain_by_hand(x: float, w: tuple) -> tuple[float, float]:
    a1 = leaky(w[0] * x)
    a2 = leaky(w[1] * a1)
    a3 = leaky(w[2] * a2)
    slope = 1.0
    for pre in (w[0] * x, w[1] * a1, w[2] * a2):
        slope *= 1.0 if pre >= 0 else 0.01
    return a3, slope * w[0] * w[1] * w[2]


@pytest.mark.parametrize("x0", [0.3, 0.77])
def test_vgg_head_released_forward_and_gradient_by_hand(x0: float) -> None:
    head = vgg_head("has8-released", W_ANN, W_TWIN)
    x = torch.zeros(1, head.ann.fc1.in_features, dtype=torch.float64)
    x[0, 0] = x0
    x.requires_grad_()
    y = head(x)
    y[0, 0].backward()

    z = TOP * x0  # every element lies in [0, 1]: "auto" keeps x as it is
    planes = planes_by_hand(z, "lsb", "none")  # LSB first, P_0 real-valued
    assert 0 < planes[0] < 2 and planes[0] != round(planes[0])
    twin, g_planes = _twin_chain_by_hand(planes, W_TWIN, msb_weights())
    ann, ann_grad = _ann_chain_by_hand(x0, W_ANN)
    assert twin > 0  # the path spikes, so the check is not vacuous
    assert y[0, 0].item() == pytest.approx(ann + twin, abs=1e-12)
    assert y[0, 1].item() == 0.0

    grad = ann_grad + TOP * encoder_grad(z, g_planes, "lsb", offset=0.5)
    assert x.grad[0, 0].item() == pytest.approx(grad, rel=1e-9, abs=1e-12)
    assert torch.count_nonzero(x.grad[0, 1:]) == 0  # per element, not a product of sums


def test_vgg_head_released_decode_is_bit_reversed() -> None:
    """Twin of identity-like spikes: one spike at step t decodes to 2^(7-t)/255 although the
    encoder put plane k = t there (the released LSB/MSB mismatch)."""
    head = vgg_head("has8-released", (0.0, 0.0, 0.0), W_TWIN)
    x = torch.zeros(1, head.ann.fc1.in_features, dtype=torch.float64)
    x[0, 0] = 1.0 / TOP  # z = 1: only the least significant plane is set
    planes = planes_by_hand(1.0, "lsb", "none")
    assert planes == [1.0] + [0.0] * 7
    twin, _ = _twin_chain_by_hand(planes, W_TWIN, msb_weights())
    out = head(x)[0, 0].item()
    assert out == pytest.approx(twin, abs=1e-12)
    assert out == pytest.approx(2**7 / TOP, abs=1e-12)  # a value of 1 comes back as 128


# ---- VGG head, cleaned-up defaults -----------------------------------------------------------


@pytest.mark.parametrize("x0", [0.7, 1.35])
def test_vgg_head_cleaned_forward_and_gradient_by_hand(x0: float) -> None:
    head = vgg_head("has8", W_ANN, W_TWIN)
    set_running_range(head, 0.0, 2.0)  # calibrated range, frozen in eval
    x = torch.zeros(1, 768, dtype=torch.float64)
    x[0, 0] = x0
    x.requires_grad_()
    y = head(x)
    y[0, 0].backward()

    z = TOP * x0 / 2.0
    planes = planes_by_hand(z, "msb", "round")  # MSB first, true bits
    assert all(p in (0.0, 1.0) for p in planes)
    twin, g_planes = _twin_chain_by_hand(planes, W_TWIN, msb_weights())
    ann, ann_grad = _ann_chain_by_hand(x0, W_ANN)
    assert twin > 0
    assert y[0, 0].item() == pytest.approx(ann + twin, abs=1e-12)
    grad = ann_grad + TOP / 2.0 * encoder_grad(z, g_planes, "msb", offset=0.5)
    assert x.grad[0, 0].item() == pytest.approx(grad, rel=1e-9, abs=1e-12)


def test_cleaned_identity_twin_decodes_the_rounded_code() -> None:
    """With MSB order on both sides, a twin that passes planes through decodes round(z)/255
    (checked on the stem-free ResNet block's SEW shortcut: c1 = c2 = 0 leaves only the planes)."""
    block = resnet_block("has8", 0.0, 0.0)
    set_running_range(block, 0.0, 1.0)
    x = torch.zeros(1, 32, 1, 1, dtype=torch.float64)
    x[0, 0] = 0.4
    y = block(x)
    assert y[0, 0, 0, 0].item() == pytest.approx(0.4 + round(TOP * 0.4) / TOP, abs=1e-12)
    assert torch.count_nonzero(y[0, 1:]) == 0


# ---- ResNet basic block with the SEW shortcut ------------------------------------------------


def _resnet_by_hand(x0: float, c1: float, c2: float, z: float, order: str, quantize: str):
    """Output and dL/dz-side gradient of the twin: Decode(LIF(c2 LIF(c1 P)) + P)."""
    planes = planes_by_hand(z, order, quantize)
    h1, s1 = lif_forward([c1 * BN_SCALE * p for p in planes])
    h2, s2 = lif_forward([c2 * BN_SCALE * s for s in s1])
    dec_w = msb_weights()
    twin = sum(w * (s + p) for w, s, p in zip(dec_w, s2, planes, strict=True))
    g2 = lif_backward(h2, s2, dec_w)
    g1 = lif_backward(h1, s1, [c2 * BN_SCALE * g for g in g2])
    g_planes = [w + c1 * BN_SCALE * g for w, g in zip(dec_w, g1, strict=True)]  # SEW + conv
    return twin, g_planes, s2


@pytest.mark.parametrize("x0", [0.45, 0.9])
def test_resnet_block_released_by_hand(x0: float) -> None:
    c1, c2 = 3.1, 2.4
    block = resnet_block("has8-released", c1, c2)
    x = torch.zeros(1, 32, 1, 1, dtype=torch.float64)
    x[0, 0] = x0
    x.requires_grad_()
    y = block(x)
    y[0, 0, 0, 0].backward()

    z = TOP * x0
    twin, g_planes, s2 = _resnet_by_hand(x0, c1, c2, z, "lsb", "none")
    assert sum(s2) > 0  # spikes reach the SEW add
    assert y[0, 0, 0, 0].item() == pytest.approx(x0 + twin, abs=1e-12)  # relu(x) + twin
    assert torch.count_nonzero(y[0, 1:]) == 0
    grad = 1.0 + TOP * encoder_grad(z, g_planes, "lsb", offset=0.5)
    assert x.grad[0, 0, 0, 0].item() == pytest.approx(grad, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("x0", [0.45, 1.7])
def test_resnet_block_cleaned_by_hand(x0: float) -> None:
    c1, c2 = 3.1, 2.4
    block = resnet_block("has8", c1, c2)
    set_running_range(block, 0.0, 2.0)
    x = torch.zeros(1, 32, 1, 1, dtype=torch.float64)
    x[0, 0] = x0
    x.requires_grad_()
    y = block(x)
    y[0, 0, 0, 0].backward()

    z = TOP * x0 / 2.0
    twin, g_planes, s2 = _resnet_by_hand(x0, c1, c2, z, "msb", "round")
    assert sum(s2) > 0
    assert y[0, 0, 0, 0].item() == pytest.approx(x0 + twin, abs=1e-12)
    grad = 1.0 + TOP / 2.0 * encoder_grad(z, g_planes, "msb", offset=0.5)
    assert x.grad[0, 0, 0, 0].item() == pytest.approx(grad, rel=1e-9, abs=1e-12)


def test_released_auto_range_is_the_whole_batch() -> None:
    """Released: one min-max over the batch tensor (a second sample changes the first one's
    code); cleaned-up in eval: the frozen running range (it does not)."""
    x_a = torch.zeros(1, 32, 1, 1, dtype=torch.float64)
    x_a[0, 0] = 0.45
    x_b = torch.full((1, 32, 1, 1), 2.0, dtype=torch.float64)
    x_b[0, 0] = -1.0
    both = torch.cat([x_a, x_b])

    released = resnet_block("has8-released", 0.0, 0.0)  # twin output: the SEW planes only
    y = released(both)[0, 0, 0, 0].item()
    z = TOP * (0.45 - (-1.0)) / (2.0 - (-1.0))  # min -1 and max 2 over both samples
    planes = planes_by_hand(z, "lsb", "none")
    expected = 0.45 + sum(w * p for w, p in zip(msb_weights(), planes, strict=True))
    assert y == pytest.approx(expected, abs=1e-12)
    assert released(x_a)[0, 0, 0, 0].item() != pytest.approx(y, abs=1e-6)

    cleaned = resnet_block("has8", 0.0, 0.0)
    set_running_range(cleaned, 0.0, 2.0)
    torch.testing.assert_close(cleaned(both)[:1], cleaned(x_a), rtol=0, atol=0)


def test_released_block_needs_no_reset_between_backward_passes() -> None:
    """The released code kept LIF state and needed a manual reset; ours keeps none."""
    block = resnet_block("has8-released", 3.1, 2.4)
    x = torch.zeros(1, 32, 1, 1, dtype=torch.float64)
    x[0, 0] = 0.45
    grads, outs = [], []
    for _ in range(2):
        xi = x.clone().requires_grad_()
        y = block(xi)
        y.sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])


# ---- float32, bit for bit: the released layout and formulas ---------------------------------


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _released_vgg_hybrid_by_hand(b: int, c: int, k: int) -> int:
    """The released VGG: conv widths c*b*2^i (they scale with the input channels c); every
    block and the MLP head have a twin of the same size (LIF, pooling and gate: no parameters)."""
    widths = [c * b * 2**i for i in range(5)]
    convs = sum(9 * cin * w for cin, w in zip([c, *widths[:-1]], widths, strict=True))
    bns = sum(2 * w for w in widths)
    head = (widths[-1] * 1024 + 1024) + (1024 * 512 + 512) + (512 * k + k)
    return 2 * (convs + bns + head)


def test_released_vgg_widths_scale_with_input_channels() -> None:
    model = create("has8_vgg_b16", in_chans=1, recipe="has8-released")
    assert _n_params(model) == 2_371_828  # the released code's count for 1 channel, 10 classes
    assert _released_vgg_hybrid_by_hand(16, 1, 10) == 2_371_828
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[::2] == [16, 32, 64, 128, 256]  # ANN and twin conv of each block
    # another configuration: 2 channels, b24, 7 classes -> widths 48, 96, 192, 384, 768;
    # convs 9 * (2*48 + 48*96 + 96*192 + 192*384 + 384*768) = 3,525,984, BN 2 * 1,488 = 2,976,
    # head 787,456 + 524,800 + 3,591 = 1,315,847: ANN 4,844,807, hybrid twice that
    model = create("has8_vgg_b24", in_chans=2, num_classes=7, recipe="has8-released")
    assert _n_params(model) == _released_vgg_hybrid_by_hand(24, 2, 7) == 9_689_614
    # the documented (non-compat) layout keeps the paper's 3*b*2^i whatever in_chans
    cleaned = create("has8_vgg_b16", in_chans=1)
    assert _n_params(cleaned) == 9_691_828
    # with 3 channels both layouts are the paper's
    assert _n_params(create("has8_vgg_b16", recipe="has8-released")) == _n_params(
        create("has8_vgg_b16")
    )


def test_released_layout_is_recorded_and_rebuilt(tmp_path) -> None:
    from hybridize.io import load, save
    from hybridize.models import create_from_spec

    model = create("has8_vgg_b16", in_chans=1, num_classes=3, recipe="has8-released")
    assert model.hybridize_spec["kwargs"]["compat"] == "has8-released"
    ann = create_from_spec(model.hybridize_meta["model"])
    assert _n_params(ann) * 2 == _n_params(model)
    path = save(model, tmp_path / "released.safetensors")
    assert _n_params(load(path)) == _n_params(model)
    # the plain ANN of the released layout, by name
    plain = create("has8_vgg_b16", in_chans=1, hybrid=False, compat="has8-released")
    assert _n_params(plain) * 2 == 2_371_828


def _released_decode_by_hand(s: torch.Tensor) -> torch.Tensor:
    """Released: sum_t s_t 2^(7-t), accumulated in float32, then one division by 255."""
    acc = torch.zeros_like(s[0])
    for t in range(BITS):
        acc = acc + s[t] * float(2 ** (BITS - 1 - t))
    return acc / 255.0


def test_released_decoder_divides_once_bit_for_bit() -> None:
    codes = torch.arange(2**BITS)
    s = ((codes >> (BITS - 1 - torch.arange(BITS)).unsqueeze(1)) & 1).to(torch.float32)  # [8, 256]
    ref = _released_decode_by_hand(s)
    assert torch.equal(ref, codes.to(torch.float32) / 255.0)  # the exact sum, one rounding
    pre_divided = BitPlaneDecoder(BITS)(s)  # the non-compat formula: sum_t s_t (2^k / 255)
    off = torch.nonzero(pre_divided != ref).flatten()
    assert off.numel() > 0  # so the check below can fail: the formulas differ for some codes
    c = int(off[0])
    gap = (pre_divided[c] - ref[c]).abs().item()
    assert gap == torch.finfo(torch.float32).eps * 2.0 ** math.floor(math.log2(ref[c].item()))
    released = BitPlaneDecoder(BITS, compat="has8-released")
    assert torch.equal(released(s), ref)
    # spike counts of a SEW add (0, 1 or 2 per step) on a [T, N, C, H, W] layout
    torch.manual_seed(0)
    counts = torch.randint(0, 3, (BITS, 2, 3, 4, 4)).to(torch.float32)
    assert torch.equal(released(counts), _released_decode_by_hand(counts))


# whole released models in float32: a hand-written reference of the released code (SpikingJelly
# LIF semantics with the ArcTan surrogate as an autograd function, twin layers on [T*N, ...],
# LSB-first planes by remainder and floor division with the released Fourier backward,
# MSB-first decode summed then divided once, spiking branch + ANN branch) against the compat
# conversion. The reference's encoder backward is per element for every rank (the released
# 5-D reshapes mix the elements of a rank-2 input; compat deliberately does not copy that).


class _ReleasedPlanes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z)
        planes = []
        for _ in range(BITS):
            planes.append(torch.remainder(z, 2))
            z = torch.div(z, 2, rounding_mode="floor")
        return torch.stack(planes)  # t = k: least significant first

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (z,) = ctx.saved_tensors
        shape = (BITS,) + (1,) * z.ndim
        c = torch.tensor([2**k for k in range(BITS)]).view(shape)
        harmonics = [(2 / c) * torch.cos((z * torch.pi * n) / c) for n in range(1, 11, 2)]
        d = 1 / 2 - torch.stack(harmonics).sum(0)  # the released +1/2 offset
        k = torch.arange(BITS).view(shape)
        rescaled = (k * d) / torch.tensor([2 ** (BITS - 1 - k) for k in range(BITS)]).view(shape)
        return (grad * rescaled).sum(0)


class _ReleasedATan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return ALPHA_ATAN / 2 / (1 + (math.pi / 2 * ALPHA_ATAN * x) ** 2) * grad


def _released_encode(x: torch.Tensor) -> torch.Tensor:
    if bool(((x >= 0) & (x <= 1)).all()):
        r = x
    else:
        lo, hi = x.min(), x.max()
        r = torch.ones_like(x) if lo == hi else (x - lo) / (hi - lo)
    return _ReleasedPlanes.apply(r * 255.0)


def _released_lif(x_seq: torch.Tensor) -> torch.Tensor:
    v = torch.zeros_like(x_seq[0])
    spikes = []
    for x in x_seq:
        v = v + (x - v) / TAU
        s = _ReleasedATan.apply(v - 1.0)
        v = (1.0 - s) * v + s * 0.0
        spikes.append(s)
    return torch.stack(spikes)


def _released_decode(s: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([2.0 ** (BITS - 1 - t) for t in range(BITS)], dtype=s.dtype)
    return (s * w.view(BITS, *[1] * (s.ndim - 1))).sum(dim=0) / 255.0


def _folded(fn, seq: torch.Tensor) -> torch.Tensor:
    y = fn(seq.flatten(0, 1))
    return y.reshape(seq.shape[0], seq.shape[1], *y.shape[1:])


def _released_vgg(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for i in range(5):
        block = _fusion(model, f"features.{i}")
        tw = block.branch.twin
        s = _released_lif(_folded(lambda h, tw=tw: tw.bn(tw.conv(h)), _released_encode(x)))
        x = _released_decode(_folded(tw.pool, s)) + block.ann(x)  # spiking branch first
    x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
    head = _fusion(model, "head")
    tw = head.branch.twin
    p = _released_encode(x)  # [T, N, D]: the released Linear runs on it unfolded
    s = _released_lif(tw.fc3(_released_lif(tw.fc2(_released_lif(tw.fc1(p))))))
    return _released_decode(s) + head.ann(x)


def _released_resnet(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    stem = _fusion(model, "stem")
    tw = stem.branch.twin
    s = _released_lif(_folded(lambda h: tw.bn(tw.conv(h)), _released_encode(x)))
    x = _released_decode(_folded(tw.pool, s)) + stem.ann(x)
    for name in [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]:
        block = _fusion(model, name)
        tw = block.branch.twin
        p = _released_encode(x)
        out = _released_lif(_folded(lambda h, tw=tw: tw.bn1(tw.conv1(h)), p))
        out = _released_lif(_folded(lambda h, tw=tw: tw.bn2(tw.conv2(h)), out))
        identity = p
        if hasattr(tw, "downsample"):  # conv1x1 - BN, then a LIF of its own
            ds = tw.downsample
            identity = _released_lif(
                _folded(lambda h, ds=ds: getattr(ds, "1")(ds.get_submodule("0")(h)), p)
            )
        x = _released_decode(identity + out) + block.ann(x)
    return model.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _lively_released(name: str) -> nn.Module:
    """A fresh copy of a released-compat reference model whose every LIF layer fires in train
    mode (built once per name: conversion costs more than the checks)."""
    return copy.deepcopy(_lively_template(name))


@functools.cache
def _lively_template(name: str) -> nn.Module:
    torch.manual_seed(3407)
    model = create(name, num_classes=5, in_chans=1, recipe="has8-released")
    with torch.no_grad():  # livelier twins than at init
        for block in [m for m in model.modules() if isinstance(m, FusionBlock)]:
            for m in block.branch.twin.modules():
                if isinstance(m, nn.Linear):
                    m.weight.mul_(8.0)
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.uniform_(0.2, 0.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.3)
    return model


def _reference_for(name: str):
    return _released_vgg if "vgg" in name else _released_resnet


@pytest.mark.parametrize("name", ["has8_vgg_b16", "has8_resnet_b32"])
@pytest.mark.parametrize("low,high", [(-1.5, 2.5), (0.0, 1.0)])
def test_released_model_forward_bit_for_bit_float32(name: str, low: float, high: float) -> None:
    """Train mode (BN over T*N, as released) and eval mode, two input ranges: the batch
    min-max branch and the as-is branch of "auto"."""
    model = _lively_released(name)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * (high - low) + low
    lifs = [m for m in model.modules() if isinstance(m, LIF)]
    fired = dict.fromkeys(lifs, 0.0)
    for m in lifs:
        m.register_forward_hook(lambda mod, _, out: fired.__setitem__(mod, float(out.sum())))
    for train in (True, False):
        model.train(train)
        twin = copy.deepcopy(model)  # train-mode BN updates its statistics once per call
        with torch.no_grad():
            y, y_ref = model(x), _reference_for(name)(twin, x)
        assert y.dtype == torch.float32 and torch.isfinite(y).all()
        assert torch.equal(y, y_ref)
        if train:
            assert all(v > 0 for v in fired.values())  # every twin neuron layer spiked


@pytest.mark.parametrize("name", ["has8_vgg_b16", "has8_resnet_b32"])
def test_released_model_gradients_bit_for_bit_float32(name: str) -> None:
    """One training step's backward: the input gradient and every parameter's gradient equal
    the reference's (surrogates, BPTT, SEW, min-max normalisation, branch order)."""
    model = _lively_released(name).train()
    twin = copy.deepcopy(model)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 4.0 - 1.5
    x_model, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = model(x_model)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    y.backward(g)
    _reference_for(name)(twin, x_ref).backward(g)
    assert x_model.grad.abs().max() > 0
    assert torch.equal(x_model.grad, x_ref.grad)
    pairs = list(zip(model.named_parameters(), twin.parameters(), strict=True))
    assert all(p.grad is not None for (_, p), _ in pairs)
    assert [n for (n, p), q in pairs if not torch.equal(p.grad, q.grad)] == []


def test_released_fourier_evaluation_is_the_same_function() -> None:
    """The compat evaluation order of the Fourier surrogate (direct cosines) and the default one
    (Chebyshev recurrence) are one function: equal to METHOD's formula up to rounding."""
    from hybridize.spiking.surrogates import ENCODER_SURROGATES, fourier_derivative_released

    z = torch.linspace(0.0, float(TOP), 997, dtype=torch.float64)
    k = torch.arange(BITS).view(-1, 1)
    released = fourier_derivative_released(z, k, 5, 0.5)
    default = ENCODER_SURROGATES["fourier"].derivative(z, k, 5, 0.5, BITS)
    torch.testing.assert_close(released, default, rtol=0, atol=1e-9)
    for i in (0, 123, 996):
        for kk in range(BITS):
            by_hand = fourier_d(z[i].item(), kk, offset=0.5)
            assert released[kk, i].item() == pytest.approx(by_hand, abs=1e-9)
