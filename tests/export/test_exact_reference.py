"""The float64 teacher-forced pass that judges an export where float32 eager cannot."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch
from torch import nn

from hybridize.export.prepare import ExactTap, SpikeTap, export_state, spiking_layers

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _tap(model: nn.Module) -> SpikeTap:
    return SpikeTap(model, spiking_layers(model)).eval()


def test_the_float64_pass_is_the_model_run_in_float64_and_leaves_the_model_alone(
    parallel_hybrid,
):
    """Given eager's own spikes, the pass's logits are a float64 copy's forward (truth computed
    here independently), and the model keeps its float32 weights and outputs."""
    import copy

    x = torch.rand(3, 3, 16, 16)
    with export_state(parallel_hybrid):
        tap = _tap(parallel_hybrid)
        with torch.no_grad():
            (logits, *spikes), calls = tap.reference(x)
        exact = ExactTap(tap).teacher_forced(x, list(spikes), calls)
        double = copy.deepcopy(parallel_hybrid).double()
        with torch.no_grad():
            truth = double(x.double())
            again = parallel_hybrid(x)
    assert exact is not None and exact[0].dtype == torch.float64
    # the float64 copy's own spikes may differ from float32's where a membrane sits on the
    # threshold; on these inputs they agree, so the forced pass is the copy's plain forward
    assert all(torch.equal(s.double(), e) for s, e in zip(spikes, exact[1:], strict=True))
    torch.testing.assert_close(exact[0], truth, rtol=0, atol=0)
    assert (exact[0] - logits.double()).abs().max() < 1e-5  # float32 rounding apart
    assert all(p.dtype == torch.float32 for p in parallel_hybrid.parameters())
    assert torch.equal(again, logits)


class _Float32Only(nn.Module):
    """Fixes its own dtype: a float64 copy meets a float32 weight it made itself."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.fc.weight.float(), torch.zeros(2))


def test_a_model_that_cannot_run_in_float64_keeps_float32s_verdict():
    tap = SpikeTap(_Float32Only(), []).eval()
    exact = ExactTap(tap)
    assert exact.teacher_forced(torch.rand(2, 4), [], Counter()) is None
    assert "RuntimeError" in exact.unavailable
    assert exact.teacher_forced(torch.rand(2, 4), [], Counter()) is None  # not retried


def test_an_export_no_farther_from_float64_than_float32_eager_passes_at_a_tiny_tolerance(
    parallel_hybrid, tmp_path, monkeypatch
):
    """At atol 1e-9 every float32 rounding difference between onnxruntime and eager (~1e-8 on
    these logits) is outside the tolerance; the float64 pass then shows the export is as close
    to the exact result as eager itself (without it the same check fails, as it did before)."""
    from hybridize.errors import ExportError
    from hybridize.export import export_onnx, onnx_export

    x = torch.rand(2, 3, 16, 16)
    tight = {"max_real": 6, "atol": 1e-9, "rtol": 0.0}
    report = export_onnx(parallel_hybrid, x, tmp_path / "m.onnx", **tight)
    assert report.ok, report.message
    assert report.exact_batches > 0 and report.max_abs_diff > 1e-9  # float32 alone would fail
    assert report.float32_error is not None and report.float32_error > 0
    assert any(line.startswith("float64 reference:") for line in report.lines())

    class _Unavailable(ExactTap):
        def teacher_forced(self, *args, **kwargs):
            self.unavailable = "RuntimeError: made unavailable for this test"
            return None

    monkeypatch.setattr(onnx_export, "ExactTap", _Unavailable)
    with pytest.raises(
        ExportError, match="float64 reference, which .* could not run .*no flip explains it"
    ):
        export_onnx(parallel_hybrid, x, tmp_path / "n.onnx", **tight)
    assert not (tmp_path / "n.onnx").exists()


def test_float32_eager_far_from_float64_is_not_trusted_to_excuse(parallel_hybrid, tmp_path):
    """At atol 1e-12 float32 eager is ~1e4 tolerances from float64: too far for the float64
    pass to judge (the model would be too ill-conditioned to check, or compute something else
    in float64), so float32 decides, and says why."""
    from hybridize.errors import ExportError
    from hybridize.export import export_onnx

    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ExportError, match="more than 100 tolerances from its float64 pass"):
        export_onnx(parallel_hybrid, x, tmp_path / "m.onnx", max_real=6, atol=1e-12, rtol=0.0)


class _SharedLIF(nn.Module):
    """One LIF called twice per forward on tensors of different widths (as Res2Net shares its
    activation), between two encoder-fed linears."""

    def __init__(self) -> None:
        from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder

        super().__init__()
        self.encoder, self.decoder = BitPlaneEncoder(bits=4), BitPlaneDecoder(bits=4)
        self.first, self.second = nn.Linear(12, 6), nn.Linear(6, 5)
        self.lif = LIF()
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planes = self.encoder(x.flatten(1))
        return self.head(self.decoder(self.lif(self.second(self.lif(self.first(planes))))))


def test_a_shared_layer_is_compared_at_every_call_through_onnx(tmp_path):
    from hybridize.export import export_onnx

    torch.manual_seed(0)
    model = _SharedLIF().eval()
    report = export_onnx(model, torch.rand(2, 3, 2, 2), tmp_path / "m.onnx", real_inputs=False)
    assert report.ok, report.message
    # 4 random samples: encoder 4 x 4 x 12, LIF call 1 4 x 4 x 6, call 2 4 x 4 x 5
    assert report.spikes_compared == 4 * 4 * (12 + 6 + 5)


class _BatchDependentCalls(nn.Module):
    """Runs its LIF once per sample up to three: a count the traced graph freezes."""

    def __init__(self) -> None:
        from hybridize.spiking import LIF, BitPlaneEncoder

        super().__init__()
        self.encoder, self.lif = BitPlaneEncoder(bits=4), LIF()
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encoder(x.flatten(1))
        for _ in range(min(x.shape[0], 3)):
            h = self.lif(h)
        return self.head(h.mean(0))


def test_a_call_count_that_depends_on_the_input_is_one_line(tmp_path):
    from hybridize.errors import ExportError
    from hybridize.export import export_onnx

    torch.manual_seed(0)
    with pytest.raises(ExportError, match="runs 3 times on a check batch of shape .* and 2 times"):
        export_onnx(_BatchDependentCalls().eval(), torch.rand(2, 3, 2, 2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_the_check_runs_float32_proper_and_restores_the_users_precision_settings():
    """torch's per-backend fp32_precision (where this torch has it) is 'ieee' inside and the
    user's own setting after, also one the older allow_tf32 flags cannot read."""
    from hybridize.export.onnx_export import _FP32_BACKENDS, _backend, full_float32

    backends = [b for b in map(_backend, _FP32_BACKENDS) if hasattr(b, "fp32_precision")]
    if not backends:
        pytest.skip("this torch has no fp32_precision settings")
    before = [b.fp32_precision for b in backends]
    matmul = torch.backends.mkldnn.matmul
    matmul.fp32_precision = "bf16"  # a user's choice: oneDNN matmuls in bf16
    try:
        with full_float32():
            assert all(b.fp32_precision == "ieee" for b in backends)
        assert matmul.fp32_precision == "bf16"
        assert [b.fp32_precision for b in backends if b is not matmul] == [
            v for b, v in zip(backends, before, strict=True) if b is not matmul
        ]
    finally:
        for b, value in zip(backends, before, strict=True):
            b.fp32_precision = value


def test_the_check_falls_back_to_the_allow_tf32_flags_on_an_older_torch():
    """Without fp32_precision (torch before 2.9) TF32 is turned off through allow_tf32 and the
    user's flags come back, also when the check raises. In a fresh process: once this torch's
    fp32_precision has been set, reading allow_tf32 raises."""
    code = """
import torch
from hybridize.export import onnx_export
onnx_export._backend = lambda path: None  # no fp32_precision anywhere, as in an older torch
flags = torch.backends.cuda.matmul, torch.backends.cudnn
for f in flags:
    f.allow_tf32 = True
with onnx_export.full_float32():
    assert [f.allow_tf32 for f in flags] == [False, False]
try:
    with onnx_export.full_float32():
        raise KeyError
except KeyError:
    pass
assert [f.allow_tf32 for f in flags] == [True, True]
print("restored")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "restored", done.stderr[-2000:]


class _Stateful(nn.Module):
    """An integer buffer changed by the forward and a float tensor kept as a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.offset = torch.full((2,), 0.25)  # not a buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) + self.offset


def test_the_float64_copy_shares_nothing_with_the_model():
    """Its integer buffer is its own (the model's count does not move when the copy runs) and
    a plain tensor attribute is widened with the weights (no float32 left to mix)."""
    from hybridize.export.prepare import _float64_cpu_copy

    model = _Stateful()
    copy64 = _float64_cpu_copy(model)
    out = copy64(torch.rand(3, 4, dtype=torch.float64))
    assert out.dtype == torch.float64 and copy64.offset.dtype == torch.float64
    assert int(copy64.calls) == 1 and int(model.calls) == 0
    assert model.fc.weight.dtype == torch.float32 and model.offset.dtype == torch.float32
