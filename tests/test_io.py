"""Checkpoints (hybridize.io): metadata, content hash, atomic writes, one-line errors, round trip."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

import hybridize.io as hio
from hybridize.errors import CheckpointError

META = {
    "model": {"source": "timm", "name": "test_resnet", "kwargs": {"num_classes": 3, "in_chans": 3}},
    "recipe": {"name": "has8", "targets": [{"select": {"auto": "blocks"}}]},
    "example_shape": [1, 3, 32, 32],
}


def _meta_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model.hybridize_meta = json.loads(json.dumps(META))
    return model


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "m.safetensors"
    hio.save(_meta_model(), path)
    return path


def _one_line_error(path, fn=hio.load) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(path)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


def _data_start(path) -> int:
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    return 8 + header_len


def test_metadata_round_trip(ckpt) -> None:
    meta = hio.read_metadata(ckpt)
    assert meta["format"] == hio.FORMAT_VERSION
    assert {k: meta[k] for k in ("model", "recipe", "example_shape")} == META
    from hybridize import __version__

    assert meta["version"] == __version__
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt))
    assert set(tensors) == set(_meta_model().state_dict())
    with safe_open(str(ckpt), framework="pt") as f:
        raw = f.metadata()
    assert meta["sha256"] == hio.checkpoint_hash(raw, hio.content_hash(tensors))
    for k, v in _meta_model().state_dict().items():
        assert torch.equal(tensors[k], v)


def test_content_hash_covers_name_dtype_shape_and_bytes() -> None:
    a, b = torch.arange(6.0), torch.ones(2, 3)
    base = hio.content_hash({"a": a, "b": b})
    assert base == hio.content_hash({"b": b, "a": a})  # order-independent
    assert base != hio.content_hash({"a": a, "c": b})  # name
    assert base != hio.content_hash({"a": a, "b": b.reshape(3, 2)})  # shape
    assert base != hio.content_hash({"a": a, "b": b.double()})  # dtype
    z32, z32i = torch.zeros(4, dtype=torch.float32), torch.zeros(4, dtype=torch.int32)
    assert hio.content_hash({"a": z32}) != hio.content_hash({"a": z32i})  # same bytes
    c = b.clone()
    c[1, 2] = 1.0000001
    assert base != hio.content_hash({"a": a, "b": c})  # bytes
    assert hio.content_hash({"a": a}) != hio.content_hash({"a": a, "b": torch.zeros(0)})


def test_shared_tensors_are_saved(tmp_path) -> None:
    model = _meta_model()
    tied = nn.Linear(4, 3)
    tied.weight = model[0].weight  # two state_dict entries, one storage
    model.add_module("tied", tied)
    path = tmp_path / "tied.safetensors"
    hio.save(model, path)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    assert torch.equal(tensors["0.weight"], tensors["tied.weight"])


def test_missing_file(tmp_path) -> None:
    assert "not found" in _one_line_error(tmp_path / "nope.safetensors")
    assert "not found" in _one_line_error(tmp_path / "nope.safetensors", hio.read_metadata)


def test_not_safetensors(tmp_path) -> None:
    path = tmp_path / "text.safetensors"
    path.write_text("hello, this is not a checkpoint\n" * 10)
    _one_line_error(path)


def test_corrupted_header(ckpt) -> None:
    data = bytearray(ckpt.read_bytes())
    data[8:16] = b"\x00garbage"
    ckpt.write_bytes(bytes(data))
    _one_line_error(ckpt)


def test_truncated_file(ckpt) -> None:
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: _data_start(ckpt) + 5])
    _one_line_error(ckpt)


def test_foreign_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    assert "without hybridize metadata" in _one_line_error(path)


def test_hash_mismatch(ckpt) -> None:
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's data
    ckpt.write_bytes(bytes(data))
    hio.read_metadata(ckpt)  # the header is still fine
    assert "hash mismatch" in _one_line_error(ckpt)


def test_newer_format(tmp_path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "future.safetensors"
    meta = {f"hybridize.{k}": json.dumps(v) for k, v in META.items()}
    tensors = {"w": torch.zeros(2)}
    meta.update({"hybridize.format": "99", "hybridize.sha256": hio.content_hash(tensors)})
    save_file(tensors, str(path), metadata=meta)
    assert "newer" in _one_line_error(path)


def test_save_needs_meta(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        hio.save(nn.Linear(2, 2), tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_save_without_base_spec_needs_the_base_to_load(tmp_path) -> None:
    model = _meta_model()
    model.hybridize_meta["model"] = None  # no spec recorded: the base must be given to load
    path = hio.save(model, tmp_path / "x.safetensors")
    assert hio.read_metadata(path)["model"]["base_model"] == "required"
    assert "base_model=" in _one_line_error(path)


def test_save_to_missing_folder(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        hio.save(_meta_model(), tmp_path / "no" / "x.safetensors")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    import safetensors.torch as st

    target = tmp_path / "m.safetensors"
    target.write_bytes(b"previous")

    def broken(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", broken)
    with pytest.raises(OSError):
        hio.save(_meta_model(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert target.read_bytes() == b"previous"


def test_overwrite_is_complete(ckpt) -> None:
    model = _meta_model()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    hio.save(model, ckpt)
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(ckpt))["0.weight"], model[0].weight)
    assert [p.name for p in ckpt.parent.iterdir()] == [ckpt.name]


# ---- round trip (needs hybridize.convert) ----------------------------------------------------


@pytest.mark.parametrize("recipe", ["has8", "has8-finetune"])
def test_round_trip_bit_identical(tmp_path, recipe: str) -> None:
    import hybridize
    from hybridize.models import create

    torch.manual_seed(0)
    base = create("test_resnet", num_classes=3)
    hybrid = hybridize.convert(base, recipe, example_input=torch.zeros(1, 3, 32, 32))
    hybrid.train()
    hybrid(torch.rand(4, 3, 32, 32))  # move BN / encoder running statistics off their init
    hybrid.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expect = hybrid(x)
    path = tmp_path / "hybrid.safetensors"
    hio.save(hybrid, path)
    loaded = hio.load(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), expect)
    for k, v in hybrid.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert loaded.hybridize_meta["model"] == hybrid.hybridize_meta["model"]
    assert loaded.hybridize_meta["recipe"] == hybrid.hybridize_meta["recipe"]
    hio.save(loaded, tmp_path / "again.safetensors")  # a loaded model saves again
    assert (
        hio.read_metadata(tmp_path / "again.safetensors")["sha256"]
        == hio.read_metadata(path)["sha256"]
    )


def test_has8_reference_round_trip(tmp_path) -> None:
    from hybridize.models import create

    torch.manual_seed(0)
    hybrid = create("has8_resnet_b32", num_classes=3).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expect = hybrid(x)
    path = tmp_path / "b32.safetensors"
    hio.save(hybrid, path)
    with torch.no_grad():
        assert torch.equal(hio.load(path)(x), expect)
