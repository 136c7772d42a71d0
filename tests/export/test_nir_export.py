"""NIR export of the spiking twins, checked against NIR's own LIF definition (a float64
forward-Euler simulation written from the spec) and re-run in snnTorch (an independent
framework that reads the files back with ``nir.read``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from hybridize.errors import ExportError

nir = pytest.importorskip("nir", reason="the nir extra is not installed")

T = 8
DT = 1e-4


def _lif(**kw) -> nn.Module:
    from hybridize.spiking import LIF

    return LIF(time_steps=T, **kw)


def _fusion(ann: nn.Module, twin: nn.Module, gate: float = 0.5) -> nn.Module:
    from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, FusionBlock, SpikingBranch

    branch = SpikingBranch(twin, BitPlaneEncoder(bits=T), BitPlaneDecoder(bits=T))
    return FusionBlock(ann, branch, gate="fixed", gate_init=gate)


def _calibrate(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, *shape))
    return model.eval()


def _conv_bn_lif_model(seed: int = 0, **lif) -> nn.Module:
    """One conv FusionBlock whose twin is conv-BN-LIF-AvgPool (pad 1, the resnet stem pool)."""
    torch.manual_seed(seed)
    ann = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, 2, 1))
    twin = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1, bias=False),
        nn.BatchNorm2d(6),
        _lif(**lif),
        nn.AvgPool2d(3, 2, 1),
    )
    model = nn.Sequential(_fusion(ann, twin))
    model = _calibrate(model, (3, 12, 12))
    bn = twin[1]
    with torch.no_grad():  # a visible BN (not the identity) that makes neurons fire often
        bn.weight.uniform_(1.0, 3.0)
        bn.bias.uniform_(-0.5, 1.5)
    return model


def _export(model, tmp_path, shape=(2, 3, 12, 12), **kw):
    from hybridize import export_nir

    kw.setdefault("onnx", False)
    kw.setdefault("verify", True)
    torch.manual_seed(1)
    return export_nir(model, tmp_path / "out", torch.rand(shape), **kw)


def _peer_or_skip() -> None:
    from hybridize.export.nir_check import peer_missing

    reason = peer_missing()
    if reason:
        pytest.skip(reason)


def _verification(row: dict) -> dict:
    v = row["verification"]
    assert "fraction_equal" in v, v
    return v


# ------------------------------------------------------------------------- LIF vs NIR's spec


def _nir_lif_euler(node, current: np.ndarray, dt: float) -> np.ndarray:
    """NIR's LIF, tau dv/dt = (v_leak - v) + R I, z = v > v_th, v <- v_reset on z, integrated
    with forward Euler at step dt from v = 0, in float64. Written from the NIR docstring."""
    tau, r = node.tau.astype(np.float64), node.r.astype(np.float64)
    v_leak, v_th = node.v_leak.astype(np.float64), node.v_threshold.astype(np.float64)
    v_reset = node.v_reset.astype(np.float64)
    v = np.zeros_like(tau)
    out = []
    for i_t in current:
        v = v + dt / tau * ((v_leak - v) + r * i_t)
        z = v > v_th
        v = np.where(z, v_reset, v)
        out.append(z.astype(np.float64))
    return np.stack(out)


@pytest.mark.parametrize("tau,decay_input", [(2.0, True), (3.0, True), (2.5, False)])
def test_lif_parameters_follow_nirs_definition(tmp_path, tau, decay_input):
    """A Linear-LIF twin: the exported LIF, simulated from NIR's equations with the manifest's
    dt, fires exactly where our LIF does (float64 currents, away from the threshold)."""
    from hybridize.spiking.neuron import lif_multistep

    torch.manual_seed(0)
    twin = nn.Sequential(nn.Linear(5, 7), _lif(tau=tau, decay_input=decay_input))
    model = _calibrate(nn.Sequential(_fusion(nn.Linear(5, 7), twin)), (5,))
    result = _export(model, tmp_path, shape=(3, 5), verify=False)
    row = result.manifest["regions"][0]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    lif_name = next(k for k, v in graph.nodes.items() if isinstance(v, nir.LIF))
    node = graph.nodes[lif_name]
    assert np.allclose(node.tau, tau * DT) and np.allclose(node.r, 1.0 if decay_input else tau)
    assert np.all(node.v_leak == 0) and np.all(node.v_reset == 0)
    assert result.manifest["dt"] == DT
    current = torch.randn(40, 7, dtype=torch.float64) * 2
    ours = lif_multistep(current.unsqueeze(1), tau=tau, decay_input=decay_input)[:, 0]
    theirs = _nir_lif_euler(node, current.numpy(), DT)
    assert ours.sum() > 5  # the check means something only if neurons fire
    assert np.array_equal(ours.numpy(), theirs)


def test_soft_reset_and_nonzero_reset_are_listed_with_reasons(tmp_path):
    soft = _conv_bn_lif_model(v_reset=None)
    row = _export(soft, tmp_path, verify=False).manifest["regions"][0]
    assert row["status"] == "not exported" and "soft reset" in row["reason"]
    shifted = _conv_bn_lif_model(v_reset=0.25)
    row = _export(shifted, tmp_path, verify=False).manifest["regions"][0]
    assert row["status"] == "not exported" and "v_reset=0.25" in row["reason"]
    assert not any(p.suffix == ".nir" for p in (tmp_path / "out").iterdir())


# ------------------------------------------------------------------------- small twins


def test_conv_bn_lif_folds_bn_and_matches_snntorch(tmp_path):
    _peer_or_skip()
    model = _conv_bn_lif_model()
    result = _export(model, tmp_path)
    row = result.manifest["regions"][0]
    assert row["status"] == "exported" and row["gate"]["value"] == 0.5
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    kinds = sorted(type(n).__name__ for n in graph.nodes.values())
    assert kinds == ["AvgPool2d", "Conv2d", "Input", "LIF", "Output"]  # BN folded away
    conv_node = next(n for n in graph.nodes.values() if isinstance(n, nir.Conv2d))
    conv, bn = model[0].branch.twin[0], model[0].branch.twin[1]
    s = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    expected_w = conv.weight.double() * s.reshape(-1, 1, 1, 1)
    expected_b = bn.bias.double() - bn.running_mean.double() * s
    assert np.allclose(conv_node.weight, expected_w.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert np.allclose(conv_node.bias, expected_b.detach().numpy(), rtol=1e-6, atol=1e-7)
    pool = next(n for n in graph.nodes.values() if isinstance(n, nir.AvgPool2d))
    assert list(pool.kernel_size) == [3, 3] and list(pool.padding) == [1, 1]
    v = _verification(row)
    assert v["spikes_fired"] > 0.05 * v["spikes_compared"]
    assert v["fraction_equal"] >= 0.999
    assert v["output_max_abs_diff"] < 1e-5


def test_sew_residual_block_is_two_edges_into_one_node(tmp_path):
    """The twin of a ResNet basic block (SEW add of two LIF outputs) as hybridize builds it."""
    _peer_or_skip()
    import hybridize
    from hybridize.models import BasicBlock

    torch.manual_seed(0)
    base = nn.Sequential(BasicBlock(8, 16, stride=2))
    model = hybridize.convert(base, "has8", example_input=torch.rand(1, 8, 8, 8))
    model = _calibrate(model, (8, 8, 8))
    result = _export(model, tmp_path, shape=(2, 8, 8, 8))
    row = result.manifest["regions"][0]
    assert row["status"] == "exported", row["reason"]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    into = {}
    for src, dst in graph.edges:
        into.setdefault(dst, []).append(src)
    joins = [d for d, srcs in into.items() if len(srcs) == 2]
    assert len(joins) == 1
    assert all(isinstance(graph.nodes[s], nir.LIF) for s in into[joins[0]])
    v = _verification(row)
    assert v["spikes_fired"] > 0 and v["fraction_equal"] >= 0.999
    assert v["output_max_abs_diff"] == 0 or v["spikes_differing"] > 0


@pytest.mark.parametrize("lif", [{}, {"tau": 3.0, "decay_input": False}])
def test_mlp_block_becomes_affine_lif_chain(tmp_path, lif):
    _peer_or_skip()
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU())
    twin = nn.Sequential(nn.Linear(12, 16), _lif(**lif), nn.Linear(16, 4), _lif(**lif))
    with torch.no_grad():
        twin[0].weight.mul_(4)
        twin[2].weight.mul_(4)
    model = _calibrate(nn.Sequential(_fusion(ann, twin)), (12,))
    result = _export(model, tmp_path, shape=(6, 12))
    row = result.manifest["regions"][0]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    assert sum(isinstance(n, nir.Affine) for n in graph.nodes.values()) == 2
    assert sum(isinstance(n, nir.LIF) for n in graph.nodes.values()) == 2
    v = _verification(row)
    assert v["spikes_fired"] > 0 and v["spikes_differing"] == 0


def test_asymmetric_same_padding_uses_a_zero_kernel_row(tmp_path):
    """timm's TF-style Conv2dSame with stride 2 pads (0, 1): exported with a zero kernel row and
    column and symmetric padding, it still fires spike for spike in snnTorch."""
    _peer_or_skip()
    from timm.layers.conv2d_same import Conv2dSame

    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, stride=2, bias=True)
    with torch.no_grad():
        conv.weight.mul_(3)
    twin = nn.Sequential(conv, _lif())
    ann = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU())
    model = _calibrate(nn.Sequential(_fusion(ann, twin)), (3, 10, 10))
    result = _export(model, tmp_path, shape=(2, 3, 10, 10))
    row = result.manifest["regions"][0]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    node = next(n for n in graph.nodes.values() if isinstance(n, nir.Conv2d))
    assert node.weight.shape == (4, 3, 4, 4) and list(node.padding) == [1, 1]
    assert np.all(node.weight[:, :, 0, :] == 0) and np.all(node.weight[:, :, :, 0] == 0)
    v = _verification(row)
    assert v["spikes_fired"] > 0 and v["spikes_differing"] == 0


def test_batchnorm_act_with_a_lif_act_becomes_a_nir_lif(tmp_path):
    """timm's BatchNormAct2d (one fx leaf) whose act is our LIF: the BN is folded into the conv
    and its act becomes a NIR LIF node of its own, which fires spike for spike in snnTorch."""
    _peer_or_skip()
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    bn_act = BatchNormAct2d(4, act_layer=nn.ReLU)
    bn_act.act = _lif()
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), bn_act)
    ann = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    model = _calibrate(nn.Sequential(_fusion(ann, twin)), (3, 8, 8))
    with torch.no_grad():  # a visible BN that makes neurons fire often
        bn_act.weight.uniform_(1.0, 3.0)
        bn_act.bias.uniform_(-0.5, 1.5)
    result = _export(model, tmp_path, shape=(2, 3, 8, 8))
    row = result.manifest["regions"][0]
    assert row["status"] == "exported", row["reason"]
    assert [n["module"] for n in row["neurons"].values()] == ["1.act"]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    assert [type(n).__name__ for n in graph.nodes.values()].count("LIF") == 1
    assert sum(isinstance(n, nir.Conv2d) for n in graph.nodes.values()) == 1  # BN folded
    v = _verification(row)
    assert v["spikes_fired"] > 0 and v["spikes_differing"] == 0


def test_unfoldable_bn_is_a_depthwise_conv_and_matches_snntorch(tmp_path):
    """A BN after a pool cannot be folded: it becomes a depthwise 1x1 conv, which NIR 1.0's
    type check rejects on reading (recorded in the manifest) but snnTorch still runs."""
    _peer_or_skip()
    torch.manual_seed(0)
    twin = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), _lif(), nn.AvgPool2d(2), nn.BatchNorm2d(5), _lif()
    )
    ann = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
    with torch.no_grad():
        twin[0].weight.mul_(4)
    model = _calibrate(nn.Sequential(_fusion(ann, twin)), (3, 8, 8))
    result = _export(model, tmp_path, shape=(3, 3, 8, 8))
    row = result.manifest["regions"][0]
    assert row["status"] == "exported" and row["nir_type_check"] is False
    graph = nir.read(str(tmp_path / "out" / row["file"]), type_check=False)
    bn_node = next(n for n in graph.nodes.values() if isinstance(n, nir.Conv2d) and n.groups == 5)
    bn = twin[3]
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert np.allclose(bn_node.weight.reshape(-1), s.detach().numpy(), rtol=1e-6)
    v = _verification(row)
    assert v["spikes_fired"] > 0 and v["spikes_differing"] == 0


def test_verify_without_the_peer_records_why(tmp_path, monkeypatch):
    from hybridize.export import nir_check

    monkeypatch.setattr(nir_check, "peer_missing", lambda: "snntorch is not installed")
    row = _export(_conv_bn_lif_model(), tmp_path).manifest["regions"][0]
    assert row["verification"]["status"] == "not verified: snntorch is not installed"


def test_twin_nir_cannot_express_is_listed(tmp_path):
    torch.manual_seed(0)
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _lif(), nn.MaxPool2d(2))
    ann = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    ok = _conv_bn_lif_model()
    model = nn.Sequential(_fusion(ann, twin), nn.Conv2d(4, 3, 1), nn.Upsample(scale_factor=2))
    model = nn.Sequential(*model, *ok)
    result = _export(_calibrate(model, (3, 12, 12)), tmp_path, verify=False)
    rows = {r["region"]: r for r in result.manifest["regions"]}
    assert rows["0"]["status"] == "not exported" and "MaxPool2d" in rows["0"]["reason"]
    assert rows["3"]["status"] == "exported"
    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [r["region"] for r in on_disk["regions"]] == ["0", "3"]


# ------------------------------------------------------------------------- HAS-8 reference


@pytest.mark.slow
def test_has8_resnet_b32_every_twin_exported_and_agrees(tmp_path):
    _peer_or_skip()
    import hybridize

    torch.manual_seed(0)
    model = hybridize.create_model("has8_resnet_b32")
    model = _calibrate(model, (3, 16, 16))
    result = _export(model, tmp_path, shape=(2, 3, 16, 16))
    rows = result.manifest["regions"]
    assert len(rows) == 9 and all(r["status"] == "exported" for r in rows)
    compared = sum(_verification(r)["spikes_compared"] for r in rows)
    differing = sum(_verification(r)["spikes_differing"] for r in rows)
    fired = sum(_verification(r)["spikes_fired"] for r in rows)
    assert fired > 0 and 1 - differing / compared >= 0.999
    enc = rows[1]["encoder"]
    assert enc["bits"] == 8 and enc["normalize"] == "running" and len(enc["range"]) == 2
    assert rows[1]["decoder"]["weights"][0] == pytest.approx(128 / 255)


# ------------------------------------------------------------------------- files and errors


def test_manifest_records_onnx_or_why_not(tmp_path, monkeypatch):
    from hybridize.export import nir_export

    model = _conv_bn_lif_model()
    monkeypatch.setattr(
        nir_export, "missing_packages", lambda names: [n for n in names if n != "nir"]
    )
    row = _export(model, tmp_path, onnx=True, check=False, verify=False).manifest["onnx"]
    assert row["file"] is None and "onnx" in row["reason"] and "hybridize[export]" in row["reason"]


def test_manifest_points_at_a_working_onnx_file(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = _conv_bn_lif_model()
    result = _export(model, tmp_path, onnx=True, check=False, verify=False)
    path = tmp_path / "out" / result.manifest["onnx"]["file"]
    x = torch.rand(3, 3, 12, 12)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model(x).numpy(), atol=1e-4)


def test_model_without_twins_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="no spiking twin"):
        _export(nn.Sequential(nn.Conv2d(3, 3, 1)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_output_path_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "out").write_text("keep me")
    with pytest.raises(ExportError, match="is a file"):
        _export(_conv_bn_lif_model(), tmp_path, verify=False)
    assert (tmp_path / "out").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_midway_leaves_no_folder(tmp_path, monkeypatch):
    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(nir, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        _export(_conv_bn_lif_model(), tmp_path, verify=False)
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_an_earlier_export(tmp_path):
    import json

    model = _conv_bn_lif_model()
    _export(model, tmp_path, verify=False)
    out = tmp_path / "out"
    record = json.loads((out / "manifest.json").read_text())
    record["regions"].append({"region": "gone", "file": "stale.nir"})  # an earlier region
    (out / "manifest.json").write_text(json.dumps(record))
    (out / "stale.nir").write_text("old")
    _export(model, tmp_path, verify=False)
    assert not (out / "stale.nir").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    (out / "b.safetensors").write_text("a checkpoint")  # not the export's: never deleted
    with pytest.raises(ExportError, match="holds b.safetensors, not part of an earlier NIR"):
        _export(model, tmp_path, verify=False)
    assert (out / "b.safetensors").read_text() == "a checkpoint"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    from hybridize import export_nir

    with pytest.raises(ExportError, match="not empty"):
        export_nir(model, tmp_path / "other", torch.rand(1, 3, 12, 12), onnx=False)
    # another program's manifest.json does not make a folder an earlier NIR export of ours
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "manifest.json").write_text(json.dumps({"name": "their app"}))
    with pytest.raises(ExportError, match="not empty"):
        export_nir(model, tmp_path / "theirs", torch.rand(1, 3, 12, 12), onnx=False)
    assert (tmp_path / "theirs" / "manifest.json").is_file()


def test_bad_dt_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="dt"):
        _export(_conv_bn_lif_model(), tmp_path, dt=-1.0)


class _Untraceable(nn.Module):
    def forward(self, x):
        return x * 2 if float(x.sum()) > 0 else x  # data-dependent control flow


@pytest.mark.parametrize(
    "twin,shape,reason",
    [
        (
            nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), _lif()),
            (2, 6, 6),
            "excludes padding",
        ),
        (nn.Sequential(nn.AvgPool2d(2, 2, ceil_mode=True), _lif()), (2, 5, 5), "partial"),
        (nn.Sequential(nn.AdaptiveAvgPool2d(2), _lif()), (2, 5, 5), "uneven"),
        (nn.Sequential(nn.Linear(4, 4), _lif()), (3, 4), "Affine takes one feature vector"),
        (
            nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), _lif()),
            (2, 6, 6),
            "padding_mode",
        ),
        (
            nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.LayerNorm([2, 6, 6]), _lif()),
            (2, 6, 6),
            "LayerNorm has no NIR equivalent",
        ),
        (nn.Sequential(_Untraceable(), _lif()), (2, 6, 6), "cannot be traced"),
    ],
)
def test_refusals_name_the_reason(twin, shape, reason):
    from hybridize.export.nir_graph import twin_to_nir

    result = twin_to_nir(twin.eval(), torch.rand(T * 2, *shape).round(), DT)
    assert result.graph is None and reason in result.reason


def test_replace_mode_branch_is_exported_without_gate(tmp_path):
    from hybridize.spiking import BitPlaneDecoder, BitPlaneEncoder, SpikingBranch

    torch.manual_seed(0)
    twin = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _lif())
    model = nn.Sequential(SpikingBranch(twin, BitPlaneEncoder(bits=T), BitPlaneDecoder(bits=T)))
    row = _export(model.eval(), tmp_path, verify=False).manifest["regions"][0]
    assert row["status"] == "exported" and row["mode"] == "replace" and row["gate"] is None


def test_a_twin_with_side_inputs_is_refused_not_a_crash():
    """Twins of blocks that take a rotary table or a mask have a second input: refused in the
    manifest's words (the shape pass used to raise on the missing argument)."""
    from hybridize.export.nir_graph import twin_to_nir
    from hybridize.spiking import LIF

    class WithSide(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.lif = nn.Conv2d(3, 4, 3, padding=1), LIF(time_steps=8)

        def forward(self, x, scale):
            return self.lif(self.conv(x) * scale)

    result = twin_to_nir(WithSide().eval(), torch.rand(16, 3, 6, 6), dt=1e-4)
    assert result.graph is None and "more than one input" in result.reason


def test_a_membrane_exactly_at_the_threshold_fires_in_nir_too(tmp_path):
    """An identity synapse into a LIF without input decay: the membrane is an exact sum of
    bit planes, so H == V_th happens all the time. NIR's strict v > v_threshold must then
    fire where our H >= V_th does: the exported threshold is the float32 just below V_th."""
    from hybridize.spiking.neuron import lif_multistep

    fc = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(4))
    twin = nn.Sequential(fc, _lif(tau=2.0, decay_input=False))
    model = _calibrate(nn.Sequential(_fusion(nn.Linear(4, 4), twin)), (4,))
    result = _export(model, tmp_path, shape=(3, 4), verify=False)
    row = result.manifest["regions"][0]
    graph = nir.read(str(tmp_path / "out" / row["file"]))
    node = next(v for v in graph.nodes.values() if isinstance(v, nir.LIF))
    assert np.all(node.v_threshold == np.nextafter(np.float32(1.0), np.float32(0.0)))
    # planes of 1.0 (a full code): decay_input=False charges H = V/2 + 1 = 1 exactly at step 0
    current = np.ones((8, 4))
    ours = lif_multistep(
        torch.tensor(current), tau=2.0, v_threshold=1.0, v_reset=0.0, decay_input=False,
        detach_reset=False,
    ).numpy()  # fmt: skip
    assert ours.sum() > 0
    np.testing.assert_array_equal(_nir_lif_euler(node, current, DT), ours)


def test_verification_says_when_it_cannot_tell(tmp_path):
    """A twin that fires no spike agrees with any silent peer: reported as not informative.
    Another dt than snnTorch's importer assumes: not verified, with the reason."""
    _peer_or_skip()
    silent = _export(_conv_bn_lif_model(v_threshold=1e6), tmp_path / "a")
    (row,) = silent.manifest["regions"]
    assert row["verification"]["spikes_fired"] == 0
    assert row["verification"]["status"].startswith("not informative")
    fired = _export(_conv_bn_lif_model(), tmp_path / "b")
    assert fired.manifest["regions"][0]["verification"]["status"] == "verified"
    other_dt = _export(_conv_bn_lif_model(), tmp_path / "c", dt=1e-3)
    status = other_dt.manifest["regions"][0]["verification"]["status"]
    assert status.startswith("not verified") and "dt=0.0001" in status
