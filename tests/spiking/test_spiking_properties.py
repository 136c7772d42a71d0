"""Property tests (hypothesis) over shapes (rank 2..5), dtypes and options."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder

DTYPES = st.sampled_from([torch.float32, torch.float64, torch.bfloat16])
SHAPES = st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple)
SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def encoder_kwargs(draw):
    normalize = draw(st.sampled_from(["auto", "minmax", "running", "fixed"]))
    kwargs = {
        "bits": draw(st.integers(1, 10)),
        "order": draw(st.sampled_from(["msb", "lsb"])),
        "normalize": normalize,
        "quantize": draw(st.sampled_from(["none", "floor", "round"])),
        "surrogate": draw(st.sampled_from(["fourier", "sigsine", "tanhsine", "ste"])),
        "rescale": draw(st.sampled_from([None, "order-aware", "none"])),
    }
    if normalize == "fixed":
        kwargs.update(lo=-1.0, hi=2.0)
    return kwargs


@SETTINGS
@given(shape=SHAPES, dtype=DTYPES, kwargs=encoder_kwargs(), seed=st.integers(0, 2**16))
def test_encoder_invariants(shape, dtype, kwargs, seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen) * 3).to(dtype).requires_grad_()
    enc = BitPlaneEncoder(**kwargs)
    bits = kwargs["bits"]
    planes = enc(x)
    assert planes.shape == (bits, *shape) and planes.dtype == dtype
    p = planes.detach().double()
    # P_0 = z mod 2 lies in [0, 2) in float32; returned as bfloat16 it may round up to 2.0
    top_ok = (p <= 2).all() if dtype == torch.bfloat16 else (p < 2).all()
    assert torch.isfinite(p).all() and (p >= 0).all() and top_ok
    lsb = bits - 1 if kwargs["order"] == "msb" else 0
    others = torch.cat([p[:lsb], p[lsb + 1 :]])
    assert ((others == 0) | (others == 1)).all()  # only P_0 may be fractional
    if kwargs["quantize"] != "none":
        assert ((p == 0) | (p == 1)).all()
    y = BitPlaneDecoder(bits=bits, order=kwargs["order"])(planes)
    assert y.shape == shape
    yd = y.detach().double()
    assert (yd >= 0).all() and (yd <= 1 + 1e-2).all()
    (planes * torch.randn(planes.shape, generator=gen).to(dtype)).sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad.double()).all()
    # export path: same forward values from standard ops
    if kwargs["normalize"] != "running":
        enc.export_mode = True
        assert torch.equal(enc(x), planes)


@SETTINGS
@given(
    shape=SHAPES,
    dtype=DTYPES,
    v_reset=st.sampled_from([0.0, None]),
    decay_input=st.booleans(),
    detach_reset=st.booleans(),
    surrogate=st.sampled_from(["atan", "sigmoid", "rect", "triangle"]),
    learnable=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lif_invariants(
    shape, dtype, v_reset, decay_input, detach_reset, surrogate, learnable, seed
):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=gen) * 2 + 1).to(dtype).requires_grad_()
    lif = LIF(
        v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
        surrogate=surrogate, learnable_tau=learnable,
    ).to(dtype)  # fmt: skip
    s = lif(x)
    assert s.shape == shape and s.dtype == dtype
    assert ((s == 0) | (s == 1)).all()
    s.sum().backward()
    assert torch.isfinite(x.grad.double()).all()
    folded = LIF(
        v_reset=v_reset, decay_input=decay_input, detach_reset=detach_reset,
        surrogate=surrogate, learnable_tau=learnable, time_steps=shape[0],
    ).to(dtype)  # fmt: skip
    assert torch.equal(folded(x.detach().flatten(0, 1)), s.detach().flatten(0, 1))
    lif.export_mode = True
    assert torch.equal(lif(x), s)
