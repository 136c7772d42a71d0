"""The parity rule on hand-made outputs: tolerance, flips that explain a difference, top-1."""

from __future__ import annotations

import torch

from hybridize.export.parity import ParityCheck, ParityReport

N, T, K = 4, 2, 3


def _check(layouts=("folded",)):
    report = ParityReport(format="onnx", path="x", atol=1e-4, rtol=1e-3, min_top1=0.75)
    return ParityCheck(report, [f"l{i}" for i in range(len(layouts))], list(layouts))


def _logits():
    return torch.tensor(
        [[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0], [5.0, 4.0, 0.0]],
        dtype=torch.float64,
    )


def test_within_tolerance_passes():
    c = _check()
    spikes = torch.zeros(T * N, K)
    logits = _logits()
    # tolerance of sample 3 is 1e-4 + 1e-3 * 5 = 5.1e-3
    c.add(
        "random",
        [logits, spikes],
        [logits + torch.tensor([0, 0, 0, 5e-3], dtype=torch.float64)[:, None], spikes],
    )
    r = c.finish()
    assert r.ok and r.samples_outside_tol == 0 and r.spike_agreement == 1.0
    assert abs(r.max_abs_diff - 5e-3) < 1e-9 and r.top1_agreement == 1.0


def test_difference_without_flip_fails():
    c = _check()
    spikes = torch.zeros(T * N, K)
    got = _logits().clone()
    got[1, 0] += 0.01  # 0.01 > 1e-4 + 1e-3 * 2
    c.add("real", [_logits(), spikes], [got, spikes])
    r = c.finish()
    assert r.ok is False and r.samples_unexplained == 1 and "no spike flip" in r.message
    assert r.max_abs_diff_real is not None and r.max_abs_diff_random is None


def test_difference_explained_by_a_flip_of_that_sample_passes():
    c = _check()
    ref_spikes = torch.zeros(T * N, K)
    got_spikes = ref_spikes.clone()
    got_spikes[1 * N + 1, 2] = 1.0  # t = 1, sample 1 (t-major fold)
    got = _logits().clone()
    got[1, 0] += 0.5
    c.add("random", [_logits(), ref_spikes], [got, got_spikes])
    report = c.finish()
    assert report.samples_outside_tol == 1 and report.samples_unexplained == 0
    assert report.spikes_flipped == 1 and report.flips_per_layer == {"l0": 1}
    assert report.spike_agreement == 1 - 1 / (T * N * K)
    # one flip in 24 spikes is above the default allowed fraction (1e-3)
    assert report.ok is False and "flipped-spike fraction" in report.message


def test_flip_in_another_sample_does_not_explain():
    c = _check(("time_first",))
    ref_spikes = torch.zeros(T, N, K)
    got_spikes = ref_spikes.clone()
    got_spikes[0, 3, 0] = 1.0  # sample 3 flipped
    got = _logits().clone()
    got[0, 1] += 0.5  # but sample 0 differs
    c.report.max_flip_fraction = 1.0
    c.add("random", [_logits(), ref_spikes], [got, got_spikes])
    r = c.finish()
    assert r.samples_unexplained == 1 and r.ok is False


def test_top1_agreement_threshold():
    c = _check(())
    got = _logits().clone()
    got[3] = torch.tensor([4.0, 5.0, 0.0], dtype=torch.float64)  # sample 3's top-1 changes
    c.report.atol = 10.0  # logits within tolerance: only top-1 decides
    c.add("random", [_logits()], [got])
    r = c.finish()
    assert r.top1_agreement == 0.75 and r.ok  # min_top1 = 0.75
    c2 = _check(())
    c2.report.atol, c2.report.min_top1 = 10.0, 0.8
    c2.add("random", [_logits()], [got])
    assert c2.finish().ok is False


def test_check_options_apply_keyword_overrides_and_refuse_unknown_ones():
    import pytest

    from hybridize.errors import ExportError
    from hybridize.export.parity import ATOL, CheckOptions, check_options

    base = CheckOptions(n_random=7)
    got = check_options(base, {"atol": 0.5, "real_inputs": False})
    assert (got.n_random, got.atol, got.real_inputs, base.atol) == (7, 0.5, False, ATOL)
    report = ParityReport.start("onnx", "x.onnx", got, opset=17)
    assert (report.atol, report.min_top1, report.opset) == (0.5, got.min_top1, 17)
    with pytest.raises(ExportError, match=r"unknown export option\(s\) \['tol'\]"):
        check_options(None, {"tol": 1.0})


def test_check_batches_pad_a_static_batch_and_name_each_kind():
    from hybridize.export.inputs import check_batches
    from hybridize.export.parity import CheckOptions

    example = torch.rand(3, 2, 4, 4)
    real = torch.rand(4, 2, 4, 4)
    report = ParityReport(format="onnx", path="x")
    opts = CheckOptions(real_inputs=real, n_random=5)
    static = list(check_batches(example, opts, dynamic_batch=False, report=report))
    # 5 random -> batches of 3 and 2 padded to 3; 4 real -> 3 and 1 padded to 3
    assert [(k, x.shape[0], v) for k, x, v in static] == [
        ("random", 3, 3),
        ("random", 3, 2),
        ("real", 3, 3),
        ("real", 3, 1),
    ]
    assert torch.equal(static[3][1], torch.stack([real[3]] * 3))
    assert report.real_source == "given tensor"
    dynamic = list(check_batches(example, opts, dynamic_batch=True, report=report))
    assert [(x.shape[0], v) for _, x, v in dynamic] == [(4, 4), (1, 1), (4, 4)]


def test_a_static_batchs_padding_is_neither_counted_nor_compared():
    """A batch of 4 holding 2 samples and 2 repeats: the repeats' logits and spikes (here made
    to differ, which would fail the check) are cut off before the comparison, in both layouts;
    a tensor that cannot be cut per sample keeps the whole batch."""
    folded, time_first = torch.zeros(T * N, K), torch.zeros(T, N, K)
    got_folded, got_time_first = folded.clone(), time_first.clone()
    got_folded.view(T, N, K)[:, 2:] = 1.0  # every spike of the padding flipped
    got_time_first[:, 3] = 1.0
    got = _logits().clone()
    got[2:] += 10.0
    c = _check(("folded", "time_first"))
    ref = c.first([_logits(), folded, time_first], 2)
    test = c.first([got, got_folded, got_time_first], 2)
    assert [t.shape for t in test] == [(2, K), (T * 2, K), (T, 2, K)]
    assert torch.equal(test[1], got_folded.view(T, N, K)[:, :2].reshape(T * 2, K))
    c.add("random", ref, test, list(ref))
    r = c.finish()
    assert r.ok, r.message
    assert r.n_random == 2 and r.spikes_compared == 2 * (T * 2 * K)
    assert r.spikes_flipped == 0 and r.max_abs_diff == 0.0
    odd = [_logits(), torch.zeros(7, K)]  # 7 rows: no t-major fold of 4 samples
    assert _check(("folded",)).first(odd, 2) is odd


def test_a_flip_cascade_is_located_in_the_message():
    """Too many flips: the message names the first layer with flips and the one with most, in
    the order the layers ran, and how to accept a rounding cascade."""
    c = _check(("folded", "folded", "folded"))
    c.report.min_top1 = 0.0
    quiet = torch.zeros(T * N, K)
    some, many = quiet.clone(), quiet.clone()
    some[0, 0] = 1.0
    many[:3, :] = 1.0
    logits = _logits()
    c.add("random", [logits, quiet, quiet, quiet], [logits + 1.0, quiet, some, many])
    r = c.finish()
    assert r.ok is False and r.flips_per_layer == {"l1": 1, "l2": 9}
    assert "first flips in l1: 1; most in l2: 9" in r.message
    assert "max_flip_fraction" in r.message


def test_rule_four_counts_teacher_forced_flips_when_given():
    """Flips that cascade from one upstream flip are not counted when each layer, given the
    exported spikes upstream, reproduces the exported spikes; flips that remain are."""
    quiet = torch.zeros(T * N, K)
    cascade = quiet.clone()
    cascade[:4, :] = 1.0  # 12 of 24 flipped in the free-running comparison
    logits = _logits()

    passes = _check(("folded",))
    passes.add(
        "random",
        [logits, quiet],
        [logits, cascade],
        forced=[logits, cascade.clone()],
    )
    r = passes.finish()
    assert r.spikes_flipped == 12 and r.spikes_flipped_forced == 0 and r.ok

    fails = _check(("folded",))
    fails.add("random", [logits, quiet], [logits, cascade], forced=[logits, quiet.clone()])
    r = fails.finish()
    assert r.spikes_flipped_forced == 12 and r.forced_flips_per_layer == {"l0": 12}
    assert r.ok is False and "teacher-forced flip fraction 0.5 > 0.001 (most in l0: 12" in (
        r.message
    )


def _cascade():
    """A chunk whose free-running spikes and logits differ everywhere (a rounding cascade) while
    the exported spikes are what eager computes from the exported spikes upstream."""
    quiet = torch.zeros(T * N, K)
    cascade = quiet.clone()
    cascade[:4, :] = 1.0
    exported = _logits().roll(1, dims=1)  # every sample's top-1 moved
    return quiet, cascade, exported


def test_a_cascade_that_moves_the_predictions_passes_teacher_forced_with_a_warning():
    """Free-running top-1 agreement 0 (the hybrid amplifies rounding), but eager's logits from the
    exported spikes equal the exported logits: a faithful program, accepted and flagged."""
    quiet, cascade, exported = _cascade()
    c = _check(("folded",))
    c.add(
        "random",
        [_logits(), quiet],
        [exported, cascade],
        forced=[exported.clone(), cascade],
    )
    r = c.finish()
    assert r.ok, r.message
    assert r.top1_agreement == 0.0 and r.top1_agreement_forced == 1.0
    assert r.samples_outside_tol == 4 and r.samples_outside_tol_forced == 0
    assert r.max_abs_diff_forced == 0.0 and r.spikes_flipped_forced == 0
    assert "free-running top-1 agreement 0.0000 < 0.75" in r.warning
    assert any(line.startswith("warning: ") for line in r.lines())

    free_only = _check(("folded",))  # the same chunk without the teacher-forced pass fails
    free_only.report.max_flip_fraction = 1.0
    free_only.add("random", [_logits(), quiet], [exported, cascade])
    r = free_only.finish()
    assert r.ok is False and "top-1 agreement 0.0000 < 0.75" in r.message


def test_teacher_forced_logits_off_without_a_flip_are_a_wrong_graph():
    """The exported spikes are eager's, but eager's head from them disagrees with the exported
    logits: the graph after the spikes is wrong, whatever the free-running flips."""
    quiet, cascade, exported = _cascade()
    head = exported.clone()
    head[2, 0] += 0.5  # one sample's logits off by far more than the tolerance
    c = _check(("folded",))
    c.report.min_top1 = 0.0
    c.add("random", [_logits(), quiet], [exported, cascade], forced=[head, cascade])
    r = c.finish()
    assert r.samples_outside_tol_forced == 1 and r.samples_unexplained_forced == 1
    assert r.samples_unexplained == 0  # free-running, the cascade's flips would explain it
    assert r.ok is False
    assert "1 sample(s) differ by more than the tolerance teacher-forced" in r.message


def test_teacher_forced_top1_below_the_bound_fails():
    quiet, cascade, exported = _cascade()
    head = exported.clone()
    head[:3] = head[:3].roll(1, dims=1)  # three of four teacher-forced predictions disagree
    c = _check(("folded",))
    c.report.atol = 100.0  # every difference within tolerance: only top-1 decides
    c.add("random", [_logits(), quiet], [exported, cascade], forced=[head, cascade])
    r = c.finish()
    assert r.top1_agreement_forced == 0.25 and r.ok is False
    assert "teacher-forced top-1 agreement 0.2500 < 0.75" in r.message


def test_flips_are_listed_in_the_order_the_layers_ran():
    """The message's "first flips in" names the earliest layer that flipped, whichever chunk
    saw it first."""
    c = _check(("folded", "folded"))
    zero = torch.zeros(T * N, K)
    one_flip = zero.clone()
    one_flip[0, 0] = 1.0
    c.add("random", [_logits(), zero, zero], [_logits(), zero, one_flip])  # chunk 1: l1 only
    c.add("random", [_logits(), zero, zero], [_logits(), one_flip, zero])  # chunk 2: l0
    r = c.finish()
    assert list(r.flips_per_layer.items()) == [("l0", 1), ("l1", 1)]


def test_outputs_of_another_shape_are_an_export_error():
    import pytest

    from hybridize.errors import ExportError

    c = _check()
    spikes = torch.zeros(T * N, K)
    with pytest.raises(ExportError, match=r"output has shape \(4, 2\), eager's \(4, 3\)"):
        c.add("random", [_logits(), spikes], [_logits()[:, :2], spikes])


def _nan_at_top_class(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` with NaN written over each row's largest entry."""
    out = logits.clone()
    out[torch.arange(len(out)), logits.argmax(1)] = float("nan")
    return out


def test_non_finite_exported_logits_fail_even_where_every_other_check_passes():
    """NaN compares as within tolerance nowhere and as the maximum nowhere: without the guard a
    NaN at each row's top class would pass (max diff 0, top-1 agreement 1)."""
    spikes = torch.zeros(T * N, K)
    for bad in (_nan_at_top_class(_logits()), _logits() + float("inf")):
        c = _check()
        c.add("random", [_logits(), spikes], [bad, spikes])
        r = c.finish()
        assert r.ok is False and "non-finite logits" in r.message


def test_non_finite_reference_logits_fail():
    spikes = torch.zeros(T * N, K)
    c = _check()
    c.add("real", [_nan_at_top_class(_logits()), spikes], [_logits(), spikes])
    r = c.finish()
    assert r.ok is False and "non-finite logits" in r.message


def test_a_near_tie_in_the_reference_is_not_a_top1_disagreement():
    """Two reference logits 2e-7 apart, swapped by 4e-7 of rounding (within tolerance): the
    export agrees; a swap far outside a tie still counts."""
    ref = torch.tensor([[1.0, 1.0 + 2e-7, 0.0], [3.0, 1.0, 0.0]], dtype=torch.float64)
    got = ref.clone()
    got[0, 0] += 4e-7  # now class 0 wins by 2e-7
    c = ParityCheck(
        ParityReport(format="onnx", path="x", atol=1e-4, rtol=1e-3, min_top1=1.0), [], []
    )
    c.add("random", [ref], [got])
    r = c.finish()
    assert r.top1_agreement == 1.0 and r.ok
    far = ref.clone()
    far[1] = torch.tensor([1.0, 3.0, 0.0], dtype=torch.float64)  # no tie: a real disagreement
    c = ParityCheck(
        ParityReport(format="onnx", path="x", atol=1e-4, rtol=1e-3, min_top1=1.0), [], []
    )
    c.add("random", [ref], [far])
    assert c.finish().top1_agreement == 0.5


def test_one_wrong_small_layer_fails_among_large_ones():
    """Rule 4 per layer on the teacher-forced flips: 40 flips in a layer of 768 spikes (5 %)
    are 4.8e-4 of all 83,712 compared, under the overall bound of 1e-3, yet that layer's part
    of the graph is wrong; two flips in a layer are allowed (rounding)."""
    small, large = torch.zeros(T * N, 96), torch.zeros(T * N, 10368)
    wrong = small.clone()
    wrong.view(-1)[:40] = 1.0
    c = _check(("folded", "folded"))
    c.add(
        "random",
        [_logits(), small, large],
        [_logits(), wrong, large],
        forced=[_logits(), small, large],  # eager given the exported spikes upstream
    )
    r = c.finish()
    assert r.spikes_flipped_forced == 40 and 40 / r.spikes_compared < r.max_flip_fraction
    assert r.ok is False and "teacher-forced flips in l0: 40 of its 768 spikes" in r.message
    two = small.clone()
    two.view(-1)[:2] = 1.0
    c = _check(("folded", "folded"))
    c.add(
        "random",
        [_logits(), small, large],
        [_logits(), two, large],
        forced=[_logits(), small, large],
    )
    assert c.finish().ok


def test_a_forced_flip_does_not_explain_a_forced_logit_difference():
    """Teacher-forced, the layers after a flipping layer get the exported spikes, so its flip
    cannot move eager's logits: a difference there is the graph after the spikes."""
    spikes = torch.zeros(T * N, K)
    flipped = spikes.clone()
    flipped[1 * N + 2, 0] = 1.0  # sample 2's own flip, teacher-forced
    head = _logits().clone()
    head[2, 0] += 0.5
    c = _check()
    c.report.max_flip_fraction = 1.0
    c.add("random", [_logits(), spikes], [head, spikes], [_logits(), flipped])
    r = c.finish()
    assert r.samples_outside_tol_forced == 1 and r.samples_unexplained_forced == 1
    assert r.ok is False and "given the exported spikes: no flip explains it" in r.message


def test_non_finite_teacher_forced_logits_fail_whatever_the_float64_pass_says():
    """An infinite float32 forced logit would make float32 eager's distance from float64, and
    with it the tolerance, infinite: it fails as non-finite instead."""
    spikes = torch.zeros(T * N, K)
    broken = _logits().clone()
    broken[0, 0] = float("inf")
    c = _check()
    wrong = _logits().roll(1, dims=1)
    c.add(
        "random",
        [_logits(), spikes],
        [wrong, spikes],
        [broken, spikes],
        exact=lambda: [_logits(), spikes],
    )
    r = c.finish()
    assert r.ok is False and "non-finite logits" in r.message and r.exact_batches == 0


def _judged_by_float64(eager, exported, exact, **report_fields):
    """One chunk of logits (no flips) judged against a float64 pass: the finished report."""
    spikes = torch.zeros(T * exact.shape[0], K)
    c = _check()
    for name, value in report_fields.items():
        setattr(c.report, name, value)
    c.add(
        "random",
        [eager, spikes],
        [exported, spikes],
        [eager, spikes],
        exact=lambda: [exact, spikes],
    )
    return c.finish()


def _ill_conditioned():
    """Exact logits, float32 eager's 2e-3 off them (an ill-conditioned model), and an exported
    program 3e-3 off them the other way (under twice eager's error): eager and export differ by
    5e-3, beyond the 1e-4 + 1e-3 * 0.01 tolerance of logits near 0.01."""
    exact = torch.tensor([[0.010, 0.002, -0.004]] * N, dtype=torch.float64)
    eager = exact + torch.tensor([2e-3, -2e-3, 0.0], dtype=torch.float64)
    exported = exact - torch.tensor([3e-3, -3e-3, 0.0], dtype=torch.float64)
    return exact, eager, exported


def test_the_float64_pass_accepts_an_export_as_close_to_exact_as_float32_eager():
    exact, eager, exported = _ill_conditioned()
    spikes = torch.zeros(T * N, K)
    assert _asks_float64([exported, spikes], [eager, spikes])  # float32 alone would fail it
    c = _check()
    c.add("random", [eager, spikes], [exported, spikes], [eager, spikes], lambda: [exact, spikes])
    r = c.finish()
    assert r.ok, r.message
    assert r.exact_batches == 1 and abs(r.float32_error - 2e-3) < 1e-12
    assert r.samples_outside_tol_forced == 0 and abs(r.max_abs_diff_forced - 3e-3) < 1e-12
    assert any(line.startswith("float64 reference: 1 batch") for line in r.lines())

    without = _check()  # the same chunk judged by float32 eager alone: a wrong graph
    without.add("random", [eager, spikes], [exported, spikes], [eager, spikes])
    assert without.finish().ok is False


def test_float32s_error_scale_is_pooled_over_the_chunk():
    """Sample 0's float32 logits are 2e-3 from exact, sample 1's only 1e-5 (a lucky draw); the
    export is 3e-3 off on both. Per sample, sample 1 would fail (3e-3 > 2 * 1e-5 + 1.1e-4); the
    chunk's float32 error in tolerances (2e-3 / 1.1e-4) at sample 1's tolerance allows it."""
    exact = torch.tensor([[0.010, 0.002, -0.004]] * 2, dtype=torch.float64)
    eager = exact + torch.tensor([[2e-3, 0.0, 0.0], [1e-5, 0.0, 0.0]], dtype=torch.float64)
    exported = exact - torch.tensor([3e-3, 0.0, 0.0], dtype=torch.float64)
    r = _judged_by_float64(eager, exported, exact)
    assert r.ok and r.samples_outside_tol_forced == 0, r.message


def test_the_float64_pass_still_fails_an_export_farther_from_exact_than_float32():
    """Float32 eager is 2e-3 from exact; an export 0.05 from it is off by more than twice
    float32's rounding plus the tolerance: a wrong graph."""
    exact, eager, _ = _ill_conditioned()
    wrong = exact.clone()
    wrong[:, 2] += 0.05
    r = _judged_by_float64(eager, wrong, exact)
    assert r.ok is False and r.samples_unexplained_forced == N


def test_the_float64_pass_counts_only_flips_beyond_float32_eagers_own():
    """A layer of 20,000 spikes (20 flips allowed): float32 eager flips 30 against float64, the
    export 70 (over the allowance alone): 10 beyond twice eager's rounding, within it; 110 are
    50 beyond it."""
    exact_spikes = torch.zeros(T * N, 2500)
    eager_spikes = exact_spikes.clone()
    eager_spikes.view(-1)[:30] = 1.0
    logits = _logits()
    for n_flips, ok, counted in ((70, True, 10), (110, False, 50)):
        exported = exact_spikes.clone()
        exported.view(-1)[100 : 100 + n_flips] = 1.0
        c = _check()
        c.add(
            "random",
            [logits, eager_spikes],
            [logits, exported],
            [logits, eager_spikes],
            exact=lambda: [logits, exact_spikes],
        )
        r = c.finish()
        assert r.forced_flips_per_layer == {"l0": counted} and r.ok is ok, r.message


def _asks_float64(test, forced, layouts=("folded",)) -> bool:
    """Whether comparing ``test`` with eager's teacher-forced ``forced`` calls the float64 pass
    (which here gives nothing, so float32 judges)."""
    asked = []
    c = _check(layouts)
    c.add("random", forced, test, forced, lambda: asked.append(True))
    return bool(asked)


def test_the_float64_pass_runs_only_where_float32_eager_might_fail():
    """Flips are judged summed over every chunk, and the float64 pass may take a chunk's count
    below float32's: any teacher-forced flip asks for it, as do logits outside tolerance and a
    top-1 disagreement; a clean chunk does not."""
    spikes, large = torch.zeros(T * N, K), torch.zeros(T * N, 2500)
    both = ("folded", "folded")
    assert not _asks_float64([_logits(), spikes, large], [_logits(), spikes, large], both)
    rare = large.clone()
    rare[0, 0] = 1.0  # one flip in 80,000
    assert _asks_float64([_logits(), spikes, rare], [_logits(), spikes, large], both)
    swapped = _logits().roll(1, dims=1)
    assert _asks_float64([swapped, spikes, large], [_logits(), spikes, large], both)
    off = _logits() + 0.1  # every sample outside the tolerance, top-1 kept
    assert _asks_float64([off, spikes, large], [_logits(), spikes, large], both)


def test_a_sample_with_tiny_logits_does_not_widen_the_others_slack():
    """Sample 0's logits are ~5e-5, and float32 eager is 5e-3 off them (45 tolerances: still
    trusted); sample 1's export is wrong by hundreds. Pooled in tolerances, float32's error
    allows sample 1 at most 2 x 45 of its own tolerances (0.011 each): it fails."""
    exact = torch.tensor([[5e-5, -5e-5, 0.0], [10.0, 2.0, 1.0]], dtype=torch.float64)
    eager = exact.clone()
    eager[0, 0] += 5e-3
    exported = exact.clone()
    exported[1] = torch.tensor([-500.0, 900.0, 3.0], dtype=torch.float64)
    r = _judged_by_float64(eager, exported, exact)
    assert r.exact_batches == 1 and r.ok is False and r.samples_outside_tol_forced == 1


def test_an_all_zero_sample_at_zero_atol_does_not_disable_the_check():
    """atol 0 and a sample whose exact logits are all zero: its tolerance is 0, float32 is
    exact on it; the float64 pass must still fail a wrong export of the other sample."""
    exact = torch.tensor([[0.0, 0.0, 0.0], [10.0, 2.0, 1.0]], dtype=torch.float64)
    eager = exact.clone()
    eager[1, 0] += 1e-3  # 0.1 of sample 1's tolerance (0.01)
    exported = exact.clone()
    exported[1, 0] += 1.0
    r = _judged_by_float64(eager, exported, exact, atol=0.0)
    assert r.exact_batches == 1 and r.ok is False and r.samples_outside_tol_forced == 1


def test_flips_summed_over_chunks_are_judged_against_float64_where_it_ran():
    """Two flips per chunk in a layer of 24 spikes, five chunks: 10 of 120 teacher-forced flips
    fail float32's count (8 %); float64 shows float32 eager makes the same flips (the
    exported spikes are the exact ones), so none counts."""
    exact = torch.zeros(T * N, K)
    eager = exact.clone()
    eager[0, :2] = 1.0
    checks = {"float32 only": _check(), "with float64": _check()}
    for _ in range(5):
        assert _asks_float64([_logits(), exact], [_logits(), eager])
        checks["float32 only"].add(
            "random", [_logits(), exact], [_logits(), exact], [_logits(), eager]
        )
        checks["with float64"].add(
            "random",
            [_logits(), exact],
            [_logits(), exact],
            [_logits(), eager],
            lambda: [_logits(), exact],
        )
    r = checks["float32 only"].finish()
    assert r.spikes_flipped_forced == 10 and r.ok is False
    r = checks["with float64"].finish()
    assert r.spikes_flipped_forced == 0 and r.exact_batches == 5 and r.ok, r.message
