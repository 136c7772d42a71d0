"""torch.export (.pt2): saved program reloads and reproduces eager; failures leave no file."""

from __future__ import annotations

import pytest
import torch

from hybridize.errors import ExportError


def test_pt2_round_trip(parallel_hybrid, tmp_path):
    from hybridize.export import export_pt2

    path = tmp_path / "m.pt2"
    report = export_pt2(parallel_hybrid, torch.rand(2, 3, 16, 16), path, max_real=4)
    assert report.ok and report.format == "pt2"
    assert report.n_random == 4 and report.n_real == 4 and report.top1_agreement == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]
    program = torch.export.load(str(path)).module()
    x = torch.rand(3, 3, 16, 16)  # a batch size the export never saw
    with torch.no_grad():
        torch.testing.assert_close(program(x), parallel_hybrid(x), atol=1e-5, rtol=1e-4)


def test_pt2_static_batch(replace_hybrid, tmp_path):
    from hybridize.export import export_pt2

    report = export_pt2(
        replace_hybrid,
        torch.rand(2, 3, 16, 16),
        tmp_path / "m.pt2",
        dynamic_batch=False,
        real_inputs=False,
    )
    assert report.ok and not report.dynamic_batch
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(program(x), replace_hybrid(x))


def test_pt2_rejects_non_tensor_output(tmp_path):
    from hybridize.export import export_pt2

    class TwoHeads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1, x * 2

    with pytest.raises(ExportError, match="not a logits tensor"):
        export_pt2(TwoHeads(), torch.rand(2, 3), tmp_path / "m.pt2", real_inputs=False)
    assert list(tmp_path.iterdir()) == []
