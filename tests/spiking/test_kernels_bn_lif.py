"""BatchNorm -> LIF keeping no membrane: spikes bit for bit, gradients to rounding, memory.

The fused pair runs uncompiled (the kernels' very source) against the eager ops (BatchNorm then
``_LIFSequence``, itself checked against hand-written float64 recurrences in
test_spiking_neuron.py), in float64 (to 1e-12) and float32 (to rounding), on every LIF option.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from lif_options import LIF_OPTIONS
from torch import nn

from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, SpikingBranch
from hybridize.spiking.kernels import _select
from hybridize.spiking.kernels import kernel_backend_override as backend
from hybridize.spiking.kernels.bn_lif import batch_norm_source

T = 4
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-5, 1e-6)}


def _stack(lif: LIF, bn: nn.Module | None = None, channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(channels) if bn is None else bn
    with torch.no_grad():  # away from the defaults, so that weight and bias both matter
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(0.0, 1.5)
    # no conv bias: a BatchNorm cancels it (its gradient is 0 up to rounding, no test of either)
    return nn.Sequential(nn.Conv2d(2, channels, 3, padding=1, bias=False), bn, lif)


def _run(module: nn.Module, x: torch.Tensor, name: str):
    """Output, input gradient, parameter gradients, and the float tensors autograd saves."""
    for p in module.parameters():
        p.grad = None
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    xi = x.detach().clone().requires_grad_()
    with backend(name), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = module(xi)
    weights = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).reshape(y.shape)
    with backend(name):
        (y * weights.to(y.dtype)).sum().backward()
    grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
    return y.detach(), xi.grad, grads, saved


def _assert_same(module, x, rtol, atol):
    """Eager vs uncompiled kernels; returns the kernels' saved tensors."""
    y_e, g_e, p_e, _ = _run(module, x, "eager")
    y_f, g_f, p_f, saved = _run(module, x, "uncompiled")
    assert torch.equal(y_f, y_e)
    torch.testing.assert_close(g_f, g_e, rtol=rtol, atol=atol)
    assert len(p_f) == len(p_e)
    for a, b in zip(p_f, p_e, strict=True):  # sums over the batch: rounding scales with them
        torch.testing.assert_close(a, b, rtol=rtol, atol=max(atol, rtol * b.abs().max().item()))
    return y_e, saved


def _membranes(saved: list[torch.Tensor], x: torch.Tensor) -> int:
    """How many float storages of the LIF's size (x.numel() with 3 channels, x has 2) are kept
    besides the conv output the BatchNorm keeps: an H or an X."""
    size = x.numel() // x.shape[1] * 3
    storages = {t.untyped_storage().data_ptr(): t for t in saved}.values()
    return sum(1 for t in storages if t.is_floating_point() and t.numel() == size) - 1


# every option in float64 (to 1e-12), and in float32 (to rounding) a hard- and a soft-reset one
CASES = [(*o, torch.float64) for o in LIF_OPTIONS] + [
    (0.0, True, False, True, torch.float32),
    (None, False, True, False, torch.float32),
]


@pytest.mark.parametrize(("v_reset", "decay_input", "detach_reset", "learnable", "dtype"), CASES)
def test_batch_norm_lif_matches_eager_on_every_option(
    v_reset, decay_input, detach_reset, learnable, dtype
):
    lif = LIF(
        tau=3.0, v_threshold=0.5, v_reset=v_reset, decay_input=decay_input,
        detach_reset=detach_reset,
        learnable_tau=learnable, time_steps=T,
    )  # fmt: skip
    module = _stack(lif).to(dtype).train()
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(1), dtype=dtype) * 2
    y, saved = _assert_same(module, x, *TOL[dtype])
    assert 0.05 < y.mean() < 0.95  # both spikes and silences
    assert not _membranes(saved, x)  # no H (nor X) kept


def test_batch_norm_lif_every_surrogate_and_running_stats():
    x = torch.randn(T * 3, 2, 4, 4, generator=torch.Generator().manual_seed(2)) * 2
    for surrogate in ("atan", "sigmoid", "rect", "triangle"):
        module = _stack(LIF(surrogate=surrogate, alpha=1.5, v_threshold=0.7, time_steps=T))
        _assert_same(module, x, *TOL[torch.float32])
    # the BatchNorm's running statistics move as they do without the kernels
    stats = {}
    for name in ("eager", "uncompiled"):
        module = _stack(LIF(time_steps=T)).train()
        _run(module, x, name)
        stats[name] = (module[1].running_mean.clone(), module[1].running_var.clone())
    assert all(torch.equal(a, b) for a, b in zip(*stats.values(), strict=True))


def test_batch_norm_lif_matches_float64_reference():
    # the float32 kernels against the eager float64 computation of the same module
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(3)) * 2
    module = _stack(LIF(time_steps=T, learnable_tau=True))
    y32, g32, p32, _ = _run(module, x, "uncompiled")
    y64, g64, p64, _ = _run(module.double(), x.double(), "eager")
    assert torch.equal(y32.double(), y64)
    torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-6)
    for a, b in zip(p32, p64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)


def test_affine_false_and_batchnorm1d_and_unfolded_time():
    gen = torch.Generator().manual_seed(4)
    module = _stack(LIF(time_steps=T), nn.BatchNorm2d(3, affine=False))
    x = torch.randn(T * 2, 2, 5, 5, generator=gen)
    _, saved = _assert_same(module, x, 1e-5, 1e-6)
    assert not _membranes(saved, x)
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), LIF(time_steps=T))
    _assert_same(linear, torch.randn(T * 3, 6, generator=gen) * 2, 1e-5, 1e-6)
    torch.manual_seed(0)  # time-first input (time_steps None): the BatchNorm sees T as batch
    unfolded = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), LIF())
    _assert_same(unfolded, torch.randn(T, 6, generator=gen) * 2, 1e-5, 1e-6)


def _source_of(module: nn.Module, x: torch.Tensor):
    return batch_norm_source(module[:2](x.requires_grad_()))


def test_only_a_train_mode_batch_norm_output_is_used():
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(5))
    module = _stack(LIF(time_steps=T))
    assert _source_of(module, x.clone()) is not None
    module.eval()  # running statistics: not the batch's
    assert _source_of(module, x.clone()) is None
    module.train()
    module[1].bias.requires_grad_(False)  # not reachable from the node: plain fused LIF
    assert _source_of(module, x.clone()) is None
    module[1].bias.requires_grad_(True)
    y = module[:2](x.clone().requires_grad_())
    assert batch_norm_source(y * 1.0) is None  # another op in between
    assert batch_norm_source(y.transpose(0, 1)) is None  # time (batch) not outermost
    assert batch_norm_source(y[:2]) is None  # part of it
    assert batch_norm_source(y[:, :, :3]) is None  # not dense
    # dense views in another order share the BatchNorm's memory order: used (the kernel works
    # in memory order; test_kernels_layout.py checks the values of channels-last chains)
    assert batch_norm_source(y.transpose(2, 3)) is not None
    last = module[:2](x.clone().to(memory_format=torch.channels_last).requires_grad_())
    assert batch_norm_source(last) is not None  # channels-last layout


class Transposed(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(2, 3)


def test_a_transposed_batch_norm_output_gives_the_eager_values():
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(7)) * 2
    stack = _stack(LIF(time_steps=T))
    module = nn.Sequential(stack[0], stack[1], Transposed(), stack[2])
    _, saved = _assert_same(module, x, *TOL[torch.float32])
    assert _membranes(saved, x) == 0  # the BatchNorm -> LIF kernel ran: no H kept


def test_fallbacks_stay_correct_and_keep_h():
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(6)) * 2
    module = _stack(LIF(time_steps=T))
    module[1].bias.requires_grad_(False)
    _, saved = _assert_same(module, x, *TOL[torch.float32])
    assert _membranes(saved, x) == 1  # the plain fused LIF's H
    module.eval()
    module[1].bias.requires_grad_(True)
    _assert_same(module, x, *TOL[torch.float32])


def test_timm_batch_norm_act_with_a_lif_is_fused():
    import timm.layers as timm_layers

    bn = timm_layers.BatchNormAct2d(3, act_layer=nn.ReLU)
    bn.act = LIF(time_steps=T)  # what the twin builder does to a norm-act layer
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), bn, nn.Identity())
    x = torch.randn(T * 2, 2, 5, 5, generator=torch.Generator().manual_seed(7)) * 2
    _, saved = _assert_same(module, x, *TOL[torch.float32])
    assert not _membranes(saved, x)


def test_in_a_branch_the_pair_keeps_one_float_tensor_and_shared_spike_bits():
    torch.manual_seed(0)
    twin = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), LIF(time_steps=T),
        nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2), LIF(time_steps=T),
    )  # fmt: skip
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=T, normalize="minmax"), BitPlaneDecoder(T))
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(8))
    _, saved = _assert_same(branch, x, *TOL[torch.float32])
    m = T * 3 * 25  # elements per channel of the folded [T*N, C, 5, 5] tensors
    storages = {t.untyped_storage().data_ptr(): t for t in saved}.values()
    stored = sorted(
        (str(t.dtype), t.untyped_storage().nbytes())
        for t in storages
        if t.dtype == torch.uint8 or t.numel() >= 2 * m
    )
    assert stored == sorted(
        [
            ("torch.uint8", 2 * m // 8),  # the planes, one bit each
            ("torch.uint8", -(-3 * m // 8)),  # the first LIF's spikes (its save and the conv's)
            ("torch.uint8", 2 * m // 8),  # the second LIF's spikes
            ("torch.float32", 4 * 3 * m),  # the conv outputs the BatchNorms keep
            ("torch.float32", 4 * 2 * m),
        ]
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler"
)
def test_compiled_pair_and_bit_packing_match_eager():
    torch.manual_seed(0)
    twin = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), LIF(time_steps=T),
        nn.Conv2d(3, 2, 1),
    )  # fmt: skip
    branch = SpikingBranch(twin, BitPlaneEncoder(bits=T, normalize="minmax"), BitPlaneDecoder(T))
    x = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(9))
    y_e, g_e, p_e, _ = _run(branch, x, "eager")
    y_f, g_f, p_f, saved = _run(branch, x, "fused")
    assert torch.equal(y_f, y_e)
    torch.testing.assert_close(g_f, g_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(p_f, p_e, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    built = {key[0] for key in _select._compiled}
    assert {"bn_lif_backward", "pack_bits", "unpack_bits"} <= built
    assert any(t.dtype == torch.uint8 and t.numel() == -(-T * 3 * 3 * 25 // 8) for t in saved)
