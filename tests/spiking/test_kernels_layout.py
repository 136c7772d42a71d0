"""Channels-last through the spiking chain: the kernels work in a tensor's memory order, so NHWC
inputs give the NCHW results (forward bit for bit, gradients to rounding) and stay NHWC.

The memory-order views are checked by hand (strides, the (T, P, C, S) channel view); the chain
encoder -> conv -> BatchNorm -> LIF -> decoder runs with NCHW and NHWC inputs on the kernels'
source (``uncompiled``) and, once, compiled (``fused``, bit packing on).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder
from hybridize.spiking.kernels import compact_binary_saves
from hybridize.spiking.kernels import kernel_backend_override as backend
from hybridize.spiking.kernels.bn_lif import batch_norm_source
from hybridize.spiking.kernels.layout import MemoryOrder, dense_order, memory_order

CL = torch.channels_last
T = 4


def test_dense_order_of_the_usual_layouts() -> None:
    x = torch.zeros(2, 3, 4, 5)
    assert dense_order(x) == MemoryOrder((0, 1, 2, 3))
    assert dense_order(x.contiguous(memory_format=CL)) == MemoryOrder((0, 2, 3, 1))
    assert dense_order(x[:, :, :2]) is None  # a slice: not dense
    assert dense_order(x.transpose(0, 1)) is None  # batch not outermost
    assert dense_order(x.transpose(0, 1), outer=0) == MemoryOrder((1, 0, 2, 3))
    # falls back to row-major, whose flat view is a copy in logical order
    assert memory_order(x[:, :, :2]) == MemoryOrder((0, 1, 2, 3))


def test_flat_and_restore_round_trip_keep_the_strides() -> None:
    x = torch.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5).contiguous(memory_format=CL)
    order = memory_order(x)
    flat = order.flat(x)
    assert flat.data_ptr() == x.data_ptr()  # a view: no copy
    assert flat.tolist() == [x[n, c, h, w].item() for n in range(2) for h in range(4)
                             for w in range(5) for c in range(3)]  # fmt: skip
    back = order.restore(flat * 2, tuple(x.shape))
    assert back.stride() == x.stride() and torch.equal(back, x * 2)
    planes = order.restore(torch.stack([flat, -flat]), tuple(x.shape), extra=1)
    assert planes.shape == (2, 2, 3, 4, 5) and torch.equal(planes[1], -x)
    assert planes[0].is_contiguous(memory_format=CL)


def test_channel_view_puts_the_channel_where_it_lies() -> None:
    # [T*N, C, H, W] = [8, 3, 4, 5] with T = 2
    assert MemoryOrder((0, 1, 2, 3)).channel_view((8, 3, 4, 5), 2) == (2, 4, 3, 20)
    assert MemoryOrder((0, 2, 3, 1)).channel_view((8, 3, 4, 5), 2) == (2, 80, 3, 1)
    assert MemoryOrder((0, 2, 3, 1)).inner() == MemoryOrder((1, 2, 0))


def _chain(seed: int = 0) -> nn.ModuleDict:
    torch.manual_seed(seed)
    chain = nn.ModuleDict(
        dict(
            encoder=BitPlaneEncoder(bits=T, normalize="minmax", gain="unit"),
            conv=nn.Conv2d(3, 6, 3, padding=1, bias=False),
            bn=nn.BatchNorm2d(6),
            lif=LIF(time_steps=T, v_threshold=0.5),
            decoder=BitPlaneDecoder(bits=T),
        )
    )
    with torch.no_grad():
        chain["bn"].weight.uniform_(0.5, 2.0)
        chain["bn"].bias.uniform_(0.0, 1.0)
    return chain


def _run(x: torch.Tensor, channels_last: bool, name: str, compact: bool = False):
    chain = _chain()
    if channels_last:
        chain.to(memory_format=CL)
        x = x.contiguous(memory_format=CL)
    xi = x.detach().clone().requires_grad_()
    used_bn_lif = []
    original = chain["lif"].forward

    def lif_forward(inp: torch.Tensor) -> torch.Tensor:
        used_bn_lif.append(batch_norm_source(inp.reshape(T, -1, *inp.shape[1:])) is not None)
        return original(inp)

    chain["lif"].forward = lif_forward
    with backend(name), compact_binary_saves() if compact else nullcontext():
        planes = chain["encoder"](xi)
        spikes = chain["lif"](chain["bn"](chain["conv"](planes.flatten(0, 1))))
        out = chain["decoder"](spikes.unflatten(0, (T, -1)))
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out * weights).sum().backward()
    layouts = [t.is_contiguous(memory_format=CL) for t in (planes[0], spikes, out, xi.grad)]
    return (planes.detach(), spikes.detach(), out.detach(), xi.grad, chain["conv"].weight.grad,
            layouts, used_bn_lif)  # fmt: skip


def _assert_rounding(got: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal up to float32 rounding of sums taken in another order (per-element and relative
    to the largest element)."""
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("name", ["uncompiled", "eager"])
def test_channels_last_chain_equals_nchw(name: str) -> None:
    x = torch.randn(2, 3, 6, 5)
    ref = _run(x, False, name)
    got = _run(x, True, name)
    for a, b in zip(ref[:3], got[:3], strict=True):  # planes, spikes, decoded: bit for bit
        assert torch.equal(a, b)
    assert got[2].abs().sum() > 0  # the LIF fired
    for a, b in zip(ref[3:5], got[3:5], strict=True):  # input and weight gradients
        _assert_rounding(b, a)
    assert all(got[5]), f"a channels-last input left channels-last at {got[5]}"
    if name == "uncompiled":  # the BatchNorm -> LIF kernel ran on the NHWC BatchNorm output
        assert got[6] == [True] and ref[6] == [True]


def test_channels_last_chain_compiled_with_bit_packing() -> None:
    x = torch.randn(2, 3, 6, 5)
    ref = _run(x, False, "eager")
    got = _run(x, True, "fused", compact=True)
    for a, b in zip(ref[:3], got[:3], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ref[3:5], got[3:5], strict=True):
        _assert_rounding(b, a)
    assert all(got[5]) and got[6] == [True]
