"""Without a gradient (eval, inference, a stem's image) the encoder and the LIF run their fused
forward kernels: planes and spikes bit for bit those of the standard ops, on every option, and
never in export mode.

The kernels run uncompiled (their very source, op by op) except in the ``slow`` tests, which
compile them; a recorder around ``run_kernel`` tells which kernels ran.
"""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from lif_options import LIF_OPTIONS
from torch import nn

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, SpikingBranch
from hybridize.spiking.kernels import encoder as encoder_kernels
from hybridize.spiking.kernels import kernel_backend_override as backend
from hybridize.spiking.kernels import lif as lif_kernels
from hybridize.spiking.kernels import range_encoder as range_kernels


@pytest.fixture
def ran(monkeypatch) -> list[str]:
    """The names of the kernels run (compiled or not) while the test runs."""
    names: list[str] = []
    for module in (lif_kernels, encoder_kernels, range_kernels):
        real = module.run_kernel

        def record(key, fn, *args, real=real):
            names.append(key[0])
            return real(key, fn, *args)

        monkeypatch.setattr(module, "run_kernel", record)
    return names


def _no_grad_outputs(module: nn.Module, x: torch.Tensor, name: str) -> list[torch.Tensor]:
    """The outputs without a gradient two ways: under no_grad, and with grad enabled but an
    input (and parameters) that need none."""
    with backend(name), torch.no_grad():
        first = module(x)
    frozen = [p for p in module.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with backend(name):
            second = module(x)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    assert not first.requires_grad and not second.requires_grad
    return [first, second]


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset", "learnable"), LIF_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_lif_without_grad_runs_the_spike_kernel_bit_for_bit(
    ran, v_reset, decay_input, detach_reset, learnable, dtype
):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(6, 3, 7, generator=gen) * 1.5 + 0.8).to(dtype)
    lif = LIF(
        tau=3.0, v_threshold=0.6, v_reset=v_reset, decay_input=decay_input,
        detach_reset=detach_reset, learnable_tau=learnable,
    ).to(dtype)  # fmt: skip
    eager = _no_grad_outputs(lif, x, "eager")
    assert not ran
    fused = _no_grad_outputs(lif, x, "uncompiled")
    assert ran == ["lif_spikes", "lif_spikes"]
    for e, f in zip(eager, fused, strict=True):
        assert f.dtype == dtype and torch.equal(f, e)
    assert 0.05 < eager[0].float().mean() < 0.95  # both spikes and silences
    # the forward with a gradient gives the same spikes
    with backend("eager"):
        assert torch.equal(lif(x.clone().requires_grad_()).detach(), eager[0])


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "rect", "triangle"])
def test_lif_without_grad_every_surrogate_and_folded_input(ran, surrogate):
    x = torch.randn(4 * 2, 3, 5, generator=torch.Generator().manual_seed(4)) * 2
    lif = LIF(surrogate=surrogate, alpha=1.5, time_steps=4, v_threshold=0.7)
    eager = _no_grad_outputs(lif, x, "eager")
    fused = _no_grad_outputs(lif, x, "uncompiled")
    assert ran == ["lif_spikes", "lif_spikes"]
    assert all(torch.equal(f, e) for e, f in zip(eager, fused, strict=True))
    assert fused[0].shape == x.shape


ENCODER_OPTIONS = [
    dict(surrogate=s, quantize=q, order=o)
    for s, q, o in itertools.product(["fourier", "ste"], ["none", "floor", "round"], ["msb", "lsb"])
]


@pytest.mark.parametrize("options", ENCODER_OPTIONS, ids=lambda o: "-".join(o.values()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encoder_without_grad_runs_the_plane_kernel_bit_for_bit(ran, options, dtype):
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(5), dtype=dtype) * 3
    for bits in (1, 8):
        enc = BitPlaneEncoder(bits=bits, normalize="minmax", **options).to(dtype)
        eager = _no_grad_outputs(enc, x, "eager")
        fused = _no_grad_outputs(enc, x, "uncompiled")
        for e, f in zip(eager, fused, strict=True):
            assert f.dtype == dtype and f.shape == (bits, *x.shape) and torch.equal(f, e)
    assert ran == ["range_encoder_forward"] * 4  # the normalisation inside the kernel
    if options["quantize"] != "none":  # planes are 0/1 (and not all one value)
        assert set(eager[0].unique().tolist()) == {0.0, 1.0}


def test_encoder_compat_and_running_modes_without_grad(ran):
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(6)) * 3
    for enc in (BitPlaneEncoder(compat="has8-released"), BitPlaneEncoder(normalize="running")):
        enc.train()(x)  # a running range to use
        enc.eval()
        eager = _no_grad_outputs(enc, x, "eager")
        fused = _no_grad_outputs(enc, x, "uncompiled")
        assert all(torch.equal(f, e) for e, f in zip(eager, fused, strict=True))
    # compat normalises with "auto" (eagerly); running's clamped range joins the kernel
    assert ran == ["encoder_forward"] * 2 + ["range_encoder_forward"] * 2


def test_export_mode_and_exporters_keep_the_standard_ops(ran, monkeypatch):
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(7)) * 2
    lif, enc = LIF(), BitPlaneEncoder(bits=4)
    with backend("eager"), torch.no_grad():
        ref = (lif(x), enc(x))
    lif.export_mode = enc.export_mode = True
    with backend("uncompiled"), torch.no_grad():
        assert torch.equal(lif(x), ref[0]) and torch.equal(enc(x), ref[1])
    lif.export_mode = enc.export_mode = False
    with monkeypatch.context() as patch, backend("uncompiled"), torch.no_grad():
        patch.setattr(torch.compiler, "is_exporting", lambda: True)  # torch.export
        assert torch.equal(lif(x), ref[0]) and torch.equal(enc(x), ref[1])
    with backend("auto"), torch.no_grad():  # tensors too small to pay for a build
        assert torch.equal(lif(x), ref[0]) and torch.equal(enc(x), ref[1])
    assert not ran
    with backend("uncompiled"), torch.no_grad():
        lif(x), enc(x)
    assert ran == ["lif_spikes", "range_encoder_forward"]


def test_spikes_of_a_frozen_layer_are_saved_as_bits_in_a_branch():
    # the first conv is frozen and the image needs no gradient: the LIF runs without one, yet
    # the trainable conv after it saves its spikes, which then take one bit each
    torch.manual_seed(0)
    twin = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), LIF(time_steps=4), nn.Conv2d(3, 2, 1))
    twin[0].requires_grad_(False)
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=4, normalize="minmax"), BitPlaneDecoder(4))
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(8))
    outputs = {}
    for name in ("eager", "uncompiled"):
        saved: list[torch.Tensor] = []

        def pack(t, saved=saved):
            saved.append(t)
            return t

        with backend(name), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outputs[name] = branch(x)
        kept = [t for t in saved if t.dim() == 1 or t.shape[0] == 12]
        if name == "uncompiled":  # the spikes, [12, 3, 5, 5]: 900 values, 8 to a byte
            assert [(t.dtype, t.numel()) for t in kept] == [(torch.uint8, 113)]
        else:
            assert [(t.dtype, t.numel()) for t in kept] == [(torch.float32, 900)]
    assert torch.equal(outputs["eager"], outputs["uncompiled"])


def test_hybrid_eval_forward_is_the_same_with_and_without_kernels(ran):
    import hybridize

    torch.manual_seed(0)
    base = hybridize.create_model("resnet10t", num_classes=4)
    model = hybridize.convert(base, "has8", example_input=torch.rand(1, 3, 16, 16)).eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        with backend("eager"):
            ref = model(x)
        assert not ran
        with backend("uncompiled"):
            out = model(x)
    assert torch.equal(out, ref)
    assert {"range_encoder_forward", "lif_spikes"} <= set(ran)


# --------------------------------------------------------------------- compiled (inductor)


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler"
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_forward_kernels_without_grad_bit_for_bit(ran, dtype):
    gen = torch.Generator().manual_seed(10)
    x = (torch.randn(2, 3, 9, 9, generator=gen) * 2).to(dtype)
    chain = nn.Sequential(BitPlaneEncoder(bits=8, normalize="minmax"), LIF(tau=2.0))
    eager = _no_grad_outputs(chain, x, "eager")
    fused = _no_grad_outputs(chain, x, "fused")
    assert all(torch.equal(f, e) for e, f in zip(eager, fused, strict=True))
    assert ran == ["range_encoder_forward", "lif_spikes"] * 2
