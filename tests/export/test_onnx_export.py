"""ONNX export: parity with PyTorch eager in onnxruntime, standard ops only, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hybridize.errors import ExportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _export(model, tmp_path, **kw):
    from hybridize.export import export_onnx

    return export_onnx(model, torch.rand(2, 3, 16, 16), tmp_path / "m.onnx", max_real=6, **kw)


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)


def test_parallel_hybrid_parity_and_standard_ops(parallel_hybrid, tmp_path):
    report = _export(parallel_hybrid, tmp_path)
    assert report.ok is True and report.message == "" and report.dynamic_batch is True
    assert (report.exporter, report.opset) == ("torchscript", 17)  # auto's first choice
    assert report.n_random == 4 and report.n_real == 6
    assert report.top1_agreement == 1.0
    # spikes of both LIFs and both encoders were compared, and none flipped on these inputs
    assert report.spikes_compared > 0 and report.spike_agreement == 1.0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    assert {n.domain for n in _nodes(proto.graph)} <= {"", "ai.onnx"}
    assert [o.name for o in proto.graph.output] == ["logits"]
    # T unrolled: no loop or custom op carries the time steps
    assert not {"Loop", "Scan", "If"} & {n.op_type for n in _nodes(proto.graph)}
    # a batch size the export never saw (dynamic axis) reproduces eager
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        ref = parallel_hybrid(x)
    torch.testing.assert_close(_run(tmp_path / "m.onnx", x), ref, atol=1e-4, rtol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left


def test_replace_mode_parity(replace_hybrid, tmp_path):
    report = _export(replace_hybrid, tmp_path)
    assert report.ok and report.spikes_compared > 0
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        ref = replace_hybrid(x)
    torch.testing.assert_close(_run(tmp_path / "m.onnx", x), ref, atol=1e-4, rtol=1e-3)


def test_static_batch(parallel_hybrid, tmp_path):
    report = _export(parallel_hybrid, tmp_path, dynamic_batch=False, real_inputs=False)
    assert report.ok and report.n_real == 0 and report.dynamic_batch is False
    proto = onnx.load(str(tmp_path / "m.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 3, 16, 16]


def test_export_restores_modes(parallel_hybrid, tmp_path):
    from hybridize.spiking import LIF

    parallel_hybrid.train()
    _export(parallel_hybrid, tmp_path, real_inputs=False)
    assert all(m.training for m in parallel_hybrid.modules())
    assert not any(m.export_mode for m in parallel_hybrid.modules() if isinstance(m, LIF))


class _BatchDependent(nn.Module):
    """Python control flow on the batch size: the tracer freezes the branch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 2.0 if x.shape[0] == 2 else -3.0
        return self.fc(x.flatten(1)) * scale


def test_failed_parity_raises_and_leaves_no_file(tmp_path):
    with pytest.raises(ExportError, match="parity check failed"):
        _export(_BatchDependent(), tmp_path, real_inputs=False)
    assert list(tmp_path.iterdir()) == []


def test_non_standard_domain_is_rejected():
    from onnx import helper

    from hybridize.export.onnx_export import _check_domains

    node = helper.make_node("Spike", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ExportError, match="com.example::Spike"):
        _check_domains(helper.make_model(graph))
    _check_domains(helper.make_model(helper.make_graph([], "empty", [], [])))


def test_bad_example_is_a_user_error(tmp_path):
    from hybridize.export import export_onnx

    with pytest.raises(ExportError, match="example input must be a tensor"):
        export_onnx(nn.Linear(2, 2), np.zeros((1, 2)), tmp_path / "m.onnx")


def _needs_onnxscript():
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")


def test_the_dynamo_exporter_writes_a_checked_file(parallel_hybrid, tmp_path):
    """``exporter="dynamo"`` (torch.export + onnxscript) passes the same parity check, keeps the
    batch axis dynamic and writes standard ops only."""
    _needs_onnxscript()
    report = _export(parallel_hybrid, tmp_path, exporter="dynamo")
    assert report.ok is True and (report.exporter, report.opset) == ("dynamo", 18)
    assert report.spikes_compared > 0 and report.top1_agreement == 1.0
    assert report.dynamic_batch and "torch's dynamo exporter, opset 18" in report.lines()[0]
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert {n.domain for n in _nodes(proto.graph)} <= {"", "ai.onnx"}
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        ref = parallel_hybrid(x)
    torch.testing.assert_close(_run(tmp_path / "m.onnx", x), ref, atol=1e-4, rtol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


class _PaddedUnfold(nn.Module):
    """HaloNet's pattern: ``Tensor.unfold`` on a padded input, which torch's TorchScript-based
    exporter refuses ("input size not accessible") and the dynamo exporter handles."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3 * 2 * 2 * 9 * 9, 4)

    def forward(self, x):
        windows = nn.functional.pad(x, [1, 1, 1, 1]).unfold(2, 9, 9).unfold(3, 9, 9)
        return self.head(windows.flatten(1))


def test_auto_falls_back_to_dynamo_where_torchscript_fails(tmp_path):
    _needs_onnxscript()
    from hybridize.export import export_onnx

    torch.manual_seed(0)
    model, x = _PaddedUnfold().eval(), torch.rand(2, 3, 16, 16)
    with pytest.raises(ExportError, match="input size not accessible"):
        export_onnx(model, x, tmp_path / "t.onnx", exporter="torchscript", real_inputs=False)
    assert not list(tmp_path.iterdir())
    report = export_onnx(model, x, tmp_path / "a.onnx", real_inputs=False)
    assert report.ok and report.exporter == "dynamo"
    y = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(y)
    torch.testing.assert_close(_run(tmp_path / "a.onnx", y), ref, atol=1e-5, rtol=1e-4)


def test_an_unknown_exporter_is_refused_in_one_line(parallel_hybrid, tmp_path):
    with pytest.raises(ExportError, match="--exporter 'jit' is not one of auto, torchscript, dyn"):
        _export(parallel_hybrid, tmp_path, exporter="jit")
    assert not list(tmp_path.iterdir())


def test_auto_names_the_missing_package_when_torchscript_fails(tmp_path, monkeypatch):
    """Without onnxscript, auto keeps the TorchScript error and says how to get the fallback."""
    import importlib.util

    from hybridize.export import export_onnx

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else find_spec(n, *a)
    )
    with pytest.raises(ExportError, match="input size not accessible.*pip install onnxscript"):
        export_onnx(_PaddedUnfold().eval(), torch.rand(2, 3, 16, 16), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_opsets_above_the_torchscript_range_go_to_dynamo(parallel_hybrid, tmp_path):
    """Opset 21 is past the TorchScript exporter's last (20): ``auto`` writes it with dynamo,
    the file says opset 21 and passes the parity check; forcing torchscript is refused first."""
    _needs_onnxscript()
    from hybridize.export.onnx_writers import opset_range

    assert opset_range("torchscript")[1] == 20 < 21 <= opset_range("auto")[1]
    with pytest.raises(
        ExportError, match="--opset 21 .* with --exporter torchscript; give 7 to 20"
    ):
        _export(parallel_hybrid, tmp_path, opset=21, exporter="torchscript")
    assert not list(tmp_path.iterdir())
    report = _export(parallel_hybrid, tmp_path, opset=21)
    assert report.ok and (report.exporter, report.opset) == ("dynamo", 21)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [21]


def test_a_file_at_another_opset_than_asked_is_refused():
    """onnxscript's converter keeps opset 18 where it cannot reach the one asked for."""
    from onnx import helper

    from hybridize.export.onnx_export import _check_written_opset

    model = helper.make_model(
        helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 18)]
    )
    _check_written_opset(model, 18)
    with pytest.raises(ExportError, match="wrote opset 18 where 29 was asked for"):
        _check_written_opset(model, 29)


def test_the_check_batch_shrinks_to_fit_the_spikes(parallel_hybrid, tmp_path, monkeypatch):
    """Without a ``check_batch`` the check runs batches of 4 unless their spikes (held three
    times: eager, onnxruntime, teacher-forced) would pass the memory budget; a given one stands."""
    from hybridize.export import onnx_export

    assert _export(parallel_hybrid, tmp_path, real_inputs=False).check_batch == 4
    monkeypatch.setattr(onnx_export, "SPIKE_CHUNK_BYTES", 1)  # below one sample's spikes
    report = _export(parallel_hybrid, tmp_path, real_inputs=False)
    assert report.ok and report.check_batch == 1 and report.n_random == 4
    assert "4 random, 0 real) in batches of 1" in report.lines()[1]
    assert _export(parallel_hybrid, tmp_path, real_inputs=False, check_batch=3).check_batch == 3


def test_twin_that_never_runs_is_a_one_line_error(tmp_path):
    """A spiking layer the forward never calls cannot be compared: an ExportError that says
    which and what to do (it was a bare RuntimeError, an "internal error" in the CLI)."""
    from hybridize.export import export_onnx
    from hybridize.spiking import LIF, BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    def block() -> FusionBlock:
        twin = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), LIF(time_steps=8))
        branch = SpikingBranch(twin, BitPlaneEncoder(bits=8), BitPlaneDecoder(bits=8))
        return FusionBlock(nn.Conv2d(3, 3, 3, padding=1), branch)

    class OneUsed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = block(), block()

        def forward(self, x):
            return self.used(x).mean((2, 3))

    dest = tmp_path / "m.onnx"
    with pytest.raises(
        ExportError, match=r"^spiking layers unused\.branch\..* do not run .* --no-check"
    ):
        export_onnx(OneUsed().eval(), torch.rand(2, 3, 8, 8), dest, real_inputs=False)
    assert not dest.exists()


def test_an_example_without_a_batch_axis_names_its_shape(tmp_path):
    from hybridize.export import export_onnx, export_pt2

    model = nn.Sequential(nn.Linear(3, 2))
    for export in (export_onnx, export_pt2):
        with pytest.raises(ExportError, match=r"got a tensor of shape \(3,\)"):
            export(model, torch.rand(3), tmp_path / "m.out")
