"""Cases where the fused paths once disagreed with eager: spikes changed in place after they
were marked binary, a BatchNorm with a bias and no weight, the kernel setting changed between
forward and backward, and encoder/decoder plane orders that do not match."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridize.errors import SpikingConfigError
from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, SpikingBranch
from hybridize.spiking.kernels import _select
from hybridize.spiking.kernels import kernel_backend_override as backend

T = 4


class _InPlaceJoin(nn.Module):
    """fc -> LIF, then the planes added in place (a residual `out.add_(x)`): values of 2 on a
    tensor the LIF had marked binary."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif, self.fc2 = nn.Linear(6, 6), LIF(time_steps=T), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.fc1(x) * 3)
        s.add_(x)
        return self.fc2(s)


def _grads(kernels: str, make, x) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = make()
    with backend(kernels):
        model(x).square().sum().backward()
    return [p.grad.clone() for p in model.parameters()]


def test_spikes_changed_in_place_are_saved_as_they_are():
    def make() -> nn.Module:
        return SpikingBranch(_InPlaceJoin(), BitPlaneEncoder(bits=T), BitPlaneDecoder(bits=T))

    x = torch.rand(5, 6, generator=torch.Generator().manual_seed(1))
    for got, want in zip(_grads("uncompiled", make, x), _grads("eager", make, x), strict=True):
        torch.testing.assert_close(got, want)


def test_batch_norm_with_a_bias_and_no_weight_keeps_its_bias():
    bias = torch.tensor([1.7, -0.4, 2.3])
    x0 = torch.randn(T * 4, 3, 5, generator=torch.Generator().manual_seed(2)).double()

    def run(kernels: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, b = x0.clone().requires_grad_(), bias.double().clone().requires_grad_()
        with backend(kernels):
            y = F.batch_norm(x, None, None, weight=None, bias=b, training=True)
            s = LIF(time_steps=T)(y)  # the BatchNorm's own output: the fused BN -> LIF path
            (s * torch.linspace(-1, 1, s.numel()).reshape(s.shape)).sum().backward()
        return s.detach(), x.grad, b.grad

    for got, want in zip(run("uncompiled"), run("eager"), strict=True):
        torch.testing.assert_close(got, want)


def test_batch_norm_with_a_frozen_bias_and_no_weight_keeps_its_bias():
    """The autograd node keeps neither the bias nor a gradient sink for a frozen one, so it
    cannot be told from no bias: the fused path must step aside, not rebuild y without it."""
    bias = torch.tensor([1.7, -0.4, 2.3]).double()
    x0 = torch.randn(T * 4, 3, 5, generator=torch.Generator().manual_seed(2)).double()

    def run(kernels: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = x0.clone().requires_grad_()
        with backend(kernels):
            y = F.batch_norm(x, None, None, weight=None, bias=bias, training=True)
            s = LIF(time_steps=T)(y)
            (s * torch.linspace(-1, 1, s.numel()).reshape(s.shape)).sum().backward()
        return s.detach(), x.grad

    for got, want in zip(run("uncompiled"), run("eager"), strict=True):
        torch.testing.assert_close(got, want)


def test_backward_follows_the_setting_of_its_forward(monkeypatch):
    """A forward with the uncompiled kernels and the setting switched to fused before the
    backward: the backward neither compiles nor changes path."""
    monkeypatch.setattr(_select, "_compiled", {})
    x = torch.randn(T * 2, 8, requires_grad=True)
    with backend("uncompiled"):
        s = LIF(time_steps=T)(x)
    with backend("fused"):  # would compile, were the setting read at backward time
        s.sum().backward()
    assert _select._compiled == {} and x.grad is not None


def test_plane_orders_must_match():
    twin = nn.Sequential(nn.Linear(2, 2), LIF(time_steps=8))
    with pytest.raises(
        SpikingConfigError, match="order 'lsb' and the decoder weighs them as 'msb'"
    ):
        SpikingBranch(twin, BitPlaneEncoder(order="lsb"), BitPlaneDecoder())
    with pytest.raises(SpikingConfigError, match="goes with an encoder of the same compat"):
        SpikingBranch(twin, BitPlaneEncoder(), BitPlaneDecoder(compat="has8-released"))
    SpikingBranch(twin, BitPlaneEncoder(order="lsb"), BitPlaneDecoder(order="lsb"))
    released = "has8-released"
    SpikingBranch(twin, BitPlaneEncoder(compat=released), BitPlaneDecoder(compat=released))
