"""The export stages of benchmarks/coverage.py: records of lost workers and the summary."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "coverage.py"


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_timeout_in_an_export_stage_fails_only_that_export(coverage):
    partial = {"model": "m", "status": "ok", "stage": "pt2", "export": {"onnx": {"ok": True}}}
    rec = coverage._lost(partial, "m", "Timeout", "no result within 9 s")
    assert rec["status"] == "ok" and "stage" not in rec
    assert rec["export"] == {
        "onnx": {"ok": True},
        "pt2": {"ok": False, "error_type": "Timeout", "error": "no result within 9 s", "where": ""},
    }


def test_a_crash_in_a_conversion_stage_fails_the_model(coverage):
    rec = coverage._lost({"model": "m", "stage": "backward"}, "m", "Crash", "worker died")
    assert (rec["status"], rec["stage"], rec["error_type"]) == ("fail", "backward", "Crash")


def test_export_summary_counts_each_format_and_groups_failures(coverage):
    ok = {"ok": True}
    bad = {"ok": False, "error_type": "ExportError", "error": "torch.onnx.export failed: op 7"}
    runs = [
        {"model": "a", "status": "ok", "export": {"onnx": ok, "pt2": ok}},
        {"model": "b", "status": "ok", "export": {"onnx": bad, "pt2": ok}},
        {"model": "c", "status": "ok", "export": {"onnx": ok}},  # pt2 never ran
        {"model": "d", "status": "fail", "stage": "backward"},  # not exported
    ]
    lines = coverage.export_summary(runs)
    assert "- onnx: 2 of 3 pass (66.7%); 0 not run" in lines
    assert "- pt2: 2 of 3 pass (66.7%); 1 not run" in lines
    assert "  - [1] ExportError: torch.onnx.export failed: op N: b" in lines
    assert lines[-1] == "- both: 1 of 3"


class _DataDependent(torch.nn.Module):
    """Branches on a value: torch.export refuses it, the TorchScript ONNX exporter traces it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x) if x.sum() > 0 else -self.linear(x)


def test_a_failed_export_is_tried_on_the_base_model(coverage, tmp_path):
    x = torch.ones(2, 4)
    assert coverage._base_export("onnx", _DataDependent(), x, tmp_path / "b.onnx") == {
        "base_ok": True
    }
    pt2 = coverage._base_export("pt2", _DataDependent(), x, tmp_path / "b.pt2")
    assert pt2["base_ok"] is False and pt2["base_error"]


def test_export_summary_says_whether_the_base_model_fails_too(coverage):
    bad = {"ok": False, "error_type": "ExportError", "error": "failed"}
    runs = [
        {"model": "a", "status": "ok", "export": {"onnx": {**bad, "base_ok": False}}},
        {"model": "b", "status": "ok", "export": {"onnx": {**bad, "base_ok": True}}},
    ]
    lines = coverage.export_summary(runs)
    assert "  - [1] ExportError: failed (the base model fails too): a" in lines
    assert "  - [1] ExportError: failed (the base model exports): b" in lines


def test_records_name_the_commit_that_made_them(coverage):
    import shutil
    import subprocess

    git = shutil.which("git")
    root = PATH.parents[1]
    head = subprocess.run(
        [git or "git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    if not git or head.returncode != 0:
        assert coverage.code_version() == "unknown"
    else:
        assert coverage.code_version().split("+")[0] == head.stdout.strip()


def test_a_failed_hybrid_export_records_the_error_its_time_and_the_base_result(
    coverage, monkeypatch
):
    import hybridize

    def refuse(*args, **kwargs):
        raise RuntimeError("no exporter today\nsecond line")

    monkeypatch.setattr(hybridize, "export_onnx", refuse)
    monkeypatch.setattr(hybridize, "export_pt2", refuse)
    rec: dict = {}
    coverage._check_exports(None, _DataDependent(), torch.ones(2, 4), rec, lambda stage: None)
    onnx, pt2 = rec["export"]["onnx"], rec["export"]["pt2"]
    for res in (onnx, pt2):
        assert res["ok"] is False and res["error"] == "no exporter today"
        assert res["error_type"] == "RuntimeError" and res["seconds"] >= 0
    assert onnx["base_ok"] is True and pt2["base_ok"] is False


def test_an_export_that_passes_with_a_warning_records_it_and_the_summary_names_it(
    coverage, monkeypatch
):
    import hybridize
    from hybridize.export.parity import ParityReport

    def chaotic(*args, **kwargs):
        return ParityReport(format="onnx", path="x", ok=True, warning="free-running top-1 0.5")

    monkeypatch.setattr(hybridize, "export_onnx", chaotic)
    monkeypatch.setattr(hybridize, "export_pt2", lambda *a, **k: ParityReport("pt2", "y", ok=True))
    rec: dict = {"model": "m", "status": "ok"}
    coverage._check_exports(None, _DataDependent(), torch.ones(2, 4), rec, lambda stage: None)
    assert rec["export"]["onnx"]["warning"] == "free-running top-1 0.5"
    assert "warning" not in rec["export"]["pt2"]
    lines = coverage.export_summary([rec])
    assert "- onnx: 1 of 1 pass (100.0%); 0 not run" in lines
    assert any(
        line.startswith("  - passed with a warning") and line.endswith(": m") for line in lines
    )


def test_a_timeout_in_another_recipes_check_fails_only_that_check(coverage):
    partial = {"model": "m", "status": "ok", "stage": "recipe:has8", "grad_ratio": 1.5}
    rec = coverage._lost(partial, "m", "Timeout", "no result within 9 s")
    assert rec["status"] == "ok" and rec["grad_ratio"] == 1.5 and "stage" not in rec
    assert rec["recipes"] == {
        "has8": {"ok": False, "error_type": "Timeout", "error": "no result within 9 s", "where": ""}
    }


def test_gradient_ratios_are_the_hybrids_largest_gradient_over_the_anns(coverage):
    import timm
    from gate_one import max_grad, max_grad_at_gate_one

    import hybridize

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    target = torch.arange(2) % 10
    ann_max = coverage._ann_max_grad(model, x)
    assert ann_max == max_grad(model, x, target)  # the ANN's own gradient, the model untouched

    rec: dict = {}
    stages: list[str] = []
    torch.manual_seed(1)  # has8's fresh twins: the same draw in both conversions
    coverage._check_recipes(model, x, ("has8", "no-such-recipe"), ann_max, rec, stages.append)
    assert stages == ["recipe:has8", "recipe:no-such-recipe"]
    has8 = rec["recipes"]["has8"]
    torch.manual_seed(1)
    hybrid = hybridize.convert(model, "has8", example_input=x)
    expected = max_grad_at_gate_one(hybrid, x, target)
    assert has8["ok"] and has8["grad_max"] == pytest.approx(expected, rel=1e-5)
    assert has8["grad_ratio"] == pytest.approx(expected / ann_max, rel=1e-5)
    assert has8["twins_with_grad"] == has8["blocks"] > 0
    unknown = rec["recipes"]["no-such-recipe"]
    assert unknown["ok"] is False and "no-such-recipe" in unknown["error"]


def test_gradient_summary_gives_the_range_and_names_failures(coverage):
    runs = [
        {"model": "a", "status": "ok", "grad_ratio": 0.5, "recipes": {"has8": {"ok": True, "grad_ratio": 2.0}}},
        {"model": "b", "status": "ok", "grad_ratio": 4.0, "recipes": {"has8": {"ok": True, "grad_ratio": 2e3}}},
        {"model": "c", "status": "ok", "grad_ratio": 1.0, "recipes": {"has8": {"ok": False, "error_type": "StageFailure", "error": "non-finite gradient in 3 parameters"}}},
    ]  # fmt: skip
    lines = coverage.grad_summary(runs)
    assert (
        "- has8-finetune: 3 finite; median 1x, from 0.5x (a) to 4x (b); above 1000x: none" in lines
    )
    assert "- has8: 2 finite; median 2e+03x, from 2x (a) to 2e+03x (b); above 1000x: b" in lines
    assert "  - has8 failed on 1: c (StageFailure: non-finite gradient in 3 parameters)" in lines
