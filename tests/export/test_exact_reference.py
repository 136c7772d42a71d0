"""The float64 teacher-forced pass that judges an export where float32 eager cannot."""

from __future__ import annotations

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


def test_an_export_no_farther_from_float64_than_float32_eager_passes_without_tolerance(
    parallel_hybrid, tmp_path, monkeypatch
):
    """With atol = rtol = 0 every float32 rounding difference between onnxruntime and eager is
    outside the tolerance; the float64 pass then shows the export is as close to the exact
    result as eager itself (without it the same check fails, as it did before)."""
    from hybridize.export import export_onnx, onnx_export

    x = torch.rand(2, 3, 16, 16)
    report = export_onnx(parallel_hybrid, x, tmp_path / "m.onnx", max_real=6, atol=0.0, rtol=0.0)
    assert report.ok, report.message
    assert report.exact_batches > 0 and report.max_abs_diff > 0  # float32 alone would fail
    assert report.float32_error is not None and report.float32_error > 0
    assert any(line.startswith("float64 reference:") for line in report.lines())

    class _Unavailable(ExactTap):
        def teacher_forced(self, *args, **kwargs):
            self.unavailable = "RuntimeError: made unavailable for this test"
            return None

    from hybridize.errors import ExportError

    monkeypatch.setattr(onnx_export, "ExactTap", _Unavailable)
    with pytest.raises(ExportError, match="no spike flip to explain it.*float64 reference"):
        export_onnx(parallel_hybrid, x, tmp_path / "n.onnx", max_real=6, atol=0.0, rtol=0.0)
    assert not (tmp_path / "n.onnx").exists()
