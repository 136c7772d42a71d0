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
