"""Operator-level op counts against hand-computed values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridize.metrics.counting import OpCounter, is_binary

KEY = ("r", "twin")


def _count(fn, split=True):
    counter = OpCounter(lambda: (KEY, split))
    with counter, torch.no_grad():
        fn()
    return counter.tallies[KEY]


def test_linear_with_k_ones_costs_k_times_c_out_acs():
    x = torch.zeros(2, 6)
    x[0, [0, 3, 5]] = 1.0
    x[1, [1, 2]] = 1.0  # k = 5 ones in the batch
    lin = nn.Linear(6, 4)
    t = _count(lambda: lin(x))
    assert (t.acs, t.macs, t.dense_macs, t.binary_ops) == (5 * 4, 0, 2 * 6 * 4, 1)


def test_count_does_not_depend_on_how_the_op_is_written():
    x = (torch.rand(2, 5, 6) > 0.5).float()  # token tensor [N, L, D]
    w, b = torch.randn(4, 6), torch.randn(4)
    k = int(x.sum())
    for fn in (
        lambda: F.linear(x, w, b),
        lambda: x @ w.t() + b,
        lambda: torch.einsum("nld,od->nlo", x, w),
    ):
        t = _count(fn)
        assert (t.acs, t.macs, t.dense_macs) == (k * 4, 0, 2 * 5 * 6 * 4)


def test_conv_acs_respect_padding():
    # 3x3 input, 3x3 kernel, padding 1: the centre pixel reaches all 9 outputs, a corner 4
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    x[0, 0, 0, 0] = 1.0
    conv = nn.Conv2d(1, 2, 3, padding=1)
    t = _count(lambda: conv(x))
    assert t.acs == (9 + 4) * 2
    assert t.dense_macs == (3 * 3 * 2) * (1 * 3 * 3) and t.macs == 0


def test_conv_stride_equal_kernel_reaches_each_pixel_once():
    x = torch.ones(2, 3, 4, 4)
    conv = nn.Conv2d(3, 5, 2, stride=2, bias=False)
    t = _count(lambda: conv(x))
    assert t.acs == 2 * 3 * 16 * 5
    assert t.dense_macs == 2 * (5 * 2 * 2) * (3 * 2 * 2)


def test_grouped_conv_dense_count():
    x = torch.rand(1, 4, 5, 5)
    conv = nn.Conv2d(4, 8, 3, groups=2)  # each output sees 2 channels x 9 taps
    t = _count(lambda: conv(x))
    assert t.dense_macs == (8 * 3 * 3) * (2 * 9) and t.macs == t.dense_macs and t.acs == 0


def test_multilevel_sew_sums_count_as_macs():
    x = torch.tensor([[0.0, 1.0, 2.0, 1.0]])  # spike sums in {0, 1, 2}
    t = _count(lambda: nn.Linear(4, 3)(x))
    assert (t.acs, t.macs, t.binary_ops) == (0, 12, 0)


def test_no_split_outside_twins():
    x = (torch.rand(3, 6) > 0.5).float()
    t = _count(lambda: nn.Linear(6, 2)(x), split=False)
    assert (t.acs, t.macs, t.dense_macs) == (0, 36, 36)


def test_bmm_with_binary_operand():
    a = torch.zeros(2, 3, 4)
    a[0, 0, :2] = 1.0
    a[1, 2, 3] = 1.0  # 3 ones
    b = torch.randn(2, 4, 5)
    t = _count(lambda: torch.bmm(a, b))
    assert (t.acs, t.dense_macs) == (3 * 5, 2 * 3 * 4 * 5)


def test_attention_counted():
    q, k, v = torch.randn(1, 2, 5, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    t = _count(lambda: F.scaled_dot_product_attention(q, k, v), split=False)
    assert t.dense_macs == 1 * 2 * 5 * 7 * (8 + 8)


def test_is_binary():
    assert is_binary(torch.tensor([0.0, 1.0, 1.0])) and is_binary(torch.tensor([True]))
    assert not is_binary(torch.tensor([0.0, 0.5])) and not is_binary(torch.tensor([]))


def test_causal_attention_counts_only_the_pairs_it_computes():
    # L = S = 6: query i sees keys 0..i, 1 + 2 + ... + 6 = 21 pairs of (E + Ev) = 8 MACs each
    q, k, v = torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    t = _count(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), split=False)
    assert t.dense_macs == 21 * (4 + 4)
    # L = 3 < S = 5, torch's top-left mask: query i sees keys 0..i -> 1 + 2 + 3 = 6 pairs
    q3 = torch.randn(1, 1, 3, 4)
    k5, v5 = torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    t = _count(lambda: F.scaled_dot_product_attention(q3, k5, v5, is_causal=True), split=False)
    assert t.dense_macs == 6 * (4 + 4)


def _reach_by_unfold(x: torch.Tensor, c_out: int, kernel: int) -> int:
    """ACs of a binary input through a dense conv (stride 1, no padding), by counting: every
    window's ones, in float64, times the output channels."""
    return int(F.unfold(x.double(), kernel).sum()) * c_out


def test_conv_acs_are_exact_for_a_bf16_model():
    # 113 input channels x 3 x 3: an output sees up to 1017 ones, more than bf16 holds exactly
    torch.manual_seed(0)
    x = (torch.rand(1, 113, 6, 6) < 0.9).to(torch.bfloat16)
    conv = nn.Conv2d(113, 2, 3, bias=False).to(torch.bfloat16)
    t = _count(lambda: conv(x))
    assert t.acs == _reach_by_unfold(x, 2, 3)
    assert t.dense_macs == 2 * 4 * 4 * 113 * 9


def test_multihead_attention_is_counted_in_eval_mode():
    """nn.MultiheadAttention's eval fast path is one fused op; inspect turns it off so the
    projections and both matmuls are seen."""
    from hybridize.metrics import inspect

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    model = SelfAttention()
    report = inspect(model, torch.randn(2, 5, 8))
    # per image: in-projection 5 x 8 x 24, q k^T 2 heads x 5 x 5 x 4, the same for attn @ v,
    # out-projection 5 x 8 x 8
    assert report.outside_macs == 5 * 8 * 24 + 200 + 200 + 5 * 8 * 8
    assert torch.backends.mha.get_fastpath_enabled()  # restored
