"""A checkpoint is data: it runs no code it names unless trusted, its hash covers the metadata
that rebuilds the model, and bad inputs and outputs fail with one line (issue 14)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import hybridize
import hybridize.io as hio
from hybridize._trust import code_trusted
from hybridize.errors import CheckpointError, HybridizeError, ModelError, UntrustedCodeError

SIZE = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path, model, input, output) of a small saved hybrid (timm test_resnet, has8 recipe)."""
    torch.manual_seed(0)
    base = hybridize.create_model("test_resnet", num_classes=3)
    model = hybridize.convert(base, "has8", example_input=torch.zeros(1, 3, SIZE, SIZE)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    hybridize.save(model, path)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        y = model(x)
    return path, model, x, y


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata())
    return load_file(str(path)), raw


def _chunk(h, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _raw_bytes(t: torch.Tensor) -> bytes:
    """A tensor's little-endian bytes through numpy (bfloat16, which numpy lacks, as int16)."""
    t = t.detach().contiguous()
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """The content hash as docs/models.md specifies it, written out independently: per tensor
    in sorted name order, a length-prefixed header ``name NUL dtype NUL shape NUL`` (dtype as
    torch names it without ``torch.``, shape as a list literal) and the length-prefixed bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        dtype = str(t.dtype).split(".")[-1]
        _chunk(h, f"{name}\0{dtype}\0{list(t.shape)}\0".encode())
        _chunk(h, _raw_bytes(t))
    return h.hexdigest()


def format2_hash(raw: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """The format-2 hash as docs/models.md specifies it, written out independently."""
    h = hashlib.sha256()
    for key in ("format", "model", "recipe", "example_shape"):
        _chunk(h, key.encode())
        _chunk(h, raw.get(f"hybridize.{key}", "").encode())
    _chunk(h, tensors_hash(tensors).encode())
    return h.hexdigest()


def test_the_content_hash_is_the_documented_byte_format() -> None:
    tensors = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7,
        "step": torch.tensor(3, dtype=torch.int64),
        "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "flag": torch.tensor([True, False]),
    }
    assert hio.content_hash(tensors) == tensors_hash(tensors)
    # pinned, computed with hashlib and struct alone (header b"a\0float32\0[2]\0", bytes
    # struct.pack("<2f", 1, 2)): every checkpoint already written carries hashes of this format;
    # a change in how a dtype or shape is spelled would make all of them fail to load
    pinned = "4e77972ad3bcd2d18dc6b85262fc482abdfef66722003a6cfe2b707290dafbb8"
    assert hio.content_hash({"a": torch.tensor([1.0, 2.0])}) == pinned


def rewrite(src: Path, dst: Path, rehash: str | None = "2", **changes) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with metadata ``changes`` (JSON-encoded unless str).

    ``rehash``: "2" recomputes the format-2 hash (as an attacker can), "1" writes a format-1
    file (tensors-only hash), None keeps the stored hash.
    """
    from safetensors.torch import save_file

    tensors, raw = _read(src)
    for key, value in changes.items():
        raw[f"hybridize.{key}"] = value if isinstance(value, str) else json.dumps(value)
    if rehash == "1":
        raw["hybridize.format"] = "1"
        raw["hybridize.sha256"] = hio.content_hash(tensors)
    elif rehash == "2":
        raw["hybridize.sha256"] = format2_hash(raw, tensors)
    save_file(tensors, str(dst), metadata=raw)
    return dst


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg and len(msg) < 600, msg
    return msg


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A module ``NAME`` whose import creates the file ``marker``; yields (NAME, marker).

    ``NAME.build`` builds the same architecture as the ``tiny`` checkpoint, so a trusted load
    of a spec naming it succeeds.
    """
    name = f"sentinel_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{name}.py").write_text(
        "import pathlib, timm\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "def build(num_classes=3, in_chans=3):\n"
        "    return timm.create_model('test_resnet', num_classes=num_classes, in_chans=in_chans)\n"
        "def double(x):\n    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield name, marker
    sys.modules.pop(name, None)


# ---- item 1: nothing named by a file runs unless trusted ------------------------------------


EVIL = {"source": "entrypoint", "name": "os:system", "kwargs": {"command": "touch pwned"}}


@pytest.mark.parametrize("rehash", ["1", "2"])
def test_entry_point_in_metadata_is_not_run(tiny, tmp_path, monkeypatch, rehash) -> None:
    monkeypatch.chdir(tmp_path)
    evil = rewrite(tiny[0], tmp_path / "evil.safetensors", rehash=rehash, model=EVIL)
    for kwargs in ({}, {"legacy_format": True}):
        with pytest.raises(UntrustedCodeError) as info:
            hybridize.load(evil, **kwargs)
        msg = one_line(info)
        assert "'os:system'" in msg and "trust_code=True" in msg and "--trust-code" in msg
    assert not (tmp_path / "pwned").exists()


def test_entry_point_runs_only_when_trusted(tiny, tmp_path, sentinel) -> None:
    name, marker = sentinel
    path, _, x, y = tiny
    spec = {"source": "entrypoint", "name": f"{name}:build", "kwargs": {"num_classes": 3}}
    ckpt = rewrite(path, tmp_path / "ep.safetensors", model=spec)
    with pytest.raises(UntrustedCodeError):
        hybridize.load(ckpt)
    with pytest.raises(UntrustedCodeError), hybridize.trusting_code(False):
        hybridize.load(ckpt)
    assert not marker.exists() and name not in sys.modules
    loaded = hybridize.load(ckpt, trust_code=True)  # the opt-in: the module is imported
    assert marker.exists()
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    sys.modules.pop(name, None)
    marker.unlink()
    with hybridize.trusting_code():  # the same opt-in for a block (the CLI's --trust-code)
        hybridize.load(ckpt)
    assert marker.exists()
    # the opt-in ends with its block, also when the block raises
    assert not code_trusted()
    with pytest.raises(RuntimeError), hybridize.trusting_code():
        raise RuntimeError("inside the block")
    assert not code_trusted()
    with pytest.raises(UntrustedCodeError):
        hybridize.load(ckpt)


@pytest.mark.parametrize("section", ["autowrap_functions", "leaf_modules"])
def test_recipe_import_is_not_run(tiny, tmp_path, sentinel, section) -> None:
    name, marker = sentinel
    path = tiny[0]
    recipe = json.loads(_read(path)[1]["hybridize.recipe"])
    recipe["trace"][section] = [f"{name}.double"]
    ckpt = rewrite(path, tmp_path / "imp.safetensors", recipe=recipe)
    with pytest.raises(UntrustedCodeError) as info:
        hybridize.load(ckpt)
    assert f"{name}.double" in one_line(info) and "import" in str(info.value)
    with hybridize.trusting_code(), pytest.raises(UntrustedCodeError):
        hybridize.load(ckpt, trust_code=False)  # an explicit False wins over the block
    assert not marker.exists() and name not in sys.modules
    hybridize.load(ckpt, trust_code=True)
    assert marker.exists()


def test_convert_imports_recipe_paths_only_when_trusted(tmp_path, sentinel, monkeypatch, capsys):
    name, marker = sentinel
    recipe = {"targets": [{"select": {"auto": "blocks"}}], "trace": {"autowrap_functions": []}}
    recipe["trace"]["autowrap_functions"] = [f"{name}.double"]
    base = hybridize.create_model("test_resnet", num_classes=3)
    example = torch.zeros(1, 3, SIZE, SIZE)
    with pytest.raises(UntrustedCodeError) as info:
        hybridize.convert(base, recipe, example_input=example)
    assert "hybridize.trusting_code()" in one_line(info) and not marker.exists()
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    args = ["convert", "test_resnet", "--no-pretrained", "-r", str(path), "--img-size", "32"]
    code, err = cli(args, monkeypatch, capsys)
    assert code == 2 and "--trust-code" in err and not marker.exists()
    code, err = cli([*args, "--trust-code"], monkeypatch, capsys)
    assert code == 0, err
    assert marker.exists()
    assert not code_trusted()  # the CLI's opt-in ended with its command


def test_recipe_paths_in_imported_modules_still_resolve(tiny, tmp_path) -> None:
    """Untrusted recipes may name what is already imported (torch.roll): nothing new runs."""
    path, _, x, y = tiny
    recipe = json.loads(_read(path)[1]["hybridize.recipe"])
    recipe["trace"] = {"autowrap_functions": ["torch.roll"], "leaf_modules": ["torch.nn.ReLU"]}
    ckpt = rewrite(path, tmp_path / "roll.safetensors", recipe=recipe)
    with torch.no_grad():
        assert torch.equal(hybridize.load(ckpt)(x), y)


@pytest.mark.parametrize(
    "spec",
    [
        {"source": "has8", "name": "os:system", "kwargs": {}},  # a name that parses as code
        {"source": "timm", "name": "test_resnet", "kwargs": {"checkpoint_path": "x.pth"}},
        {"source": "timm", "name": "test_resnet", "kwargs": {"pretrained_cfg_overlay": {}}},
        {"source": "timm", "name": "test_resnet", "kwargs": {"drop_rate": float("nan")}},
        {"source": "timm", "name": "test_resnet", "kwargs": {"num_classes": [[[[[[[[1]]]]]]]]}},
        {"source": "timm", "name": "test_resnet", "kwargs": {"nope": 1}},  # constructor TypeError
        {"source": "pickle", "name": "x", "kwargs": {}},
        {"source": "timm", "name": "test_resnet", "kwargs": ["a"]},
    ],
)
def test_model_spec_is_checked_as_data(tiny, tmp_path, spec) -> None:
    ckpt = rewrite(tiny[0], tmp_path / "spec.safetensors", model=spec)
    with pytest.raises(CheckpointError) as info:
        hybridize.load(ckpt)
    one_line(info)
    with pytest.raises(ModelError):
        hybridize.models.create_from_spec(spec)


def test_cli_refuses_untrusted_checkpoint(tiny, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    evil = rewrite(tiny[0], tmp_path / "evil.safetensors", model=EVIL)
    for args in (["inspect", str(evil)], ["export", str(evil), "--format", "onnx"]):
        code, err = cli(args, monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--trust-code" in err
    assert not (tmp_path / "pwned").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.safetensors"]


def cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run the console script in-process: (exit code, stderr)."""
    from hybridize_cli.main import run

    monkeypatch.setattr(sys, "argv", ["hybridize", *args])
    capsys.readouterr()
    try:
        run()
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


# ---- item 2: the hash covers the metadata that rebuilds the model ---------------------------


def test_edited_recipe_fails_the_load(tiny, tmp_path) -> None:
    path = tiny[0]
    recipe = json.loads(_read(path)[1]["hybridize.recipe"])
    recipe["defaults"]["encoder"]["bits"] = 4
    edited = rewrite(path, tmp_path / "bits4.safetensors", rehash=None, recipe=recipe)
    hybridize.io.read_metadata(edited)  # still well formed
    with pytest.raises(CheckpointError) as info:
        hybridize.load(edited)
    assert "hash mismatch" in one_line(info)


@pytest.mark.parametrize(
    "change",
    [
        {"example_shape": [1, 3, 64, 64]},
        {"model": {"source": "timm", "name": "test_resnet", "kwargs": {"num_classes": 3}}},
        {"format": "2 "},
    ],
)
def test_edited_metadata_fails_the_load(tiny, tmp_path, change) -> None:
    edited = rewrite(tiny[0], tmp_path / "edit.safetensors", rehash=None, **change)
    with pytest.raises(CheckpointError) as info:
        hybridize.load(edited)
    one_line(info)


def test_hash_follows_the_documented_formula(tiny, tmp_path) -> None:
    path, _, x, y = tiny
    tensors, raw = _read(path)
    assert raw["hybridize.format"] == "2"
    assert raw["hybridize.sha256"] == format2_hash(raw, tensors)
    # the writer's version is not hashed: another version's file loads the same
    other = rewrite(path, tmp_path / "v.safetensors", rehash=None, version="0.0.1")
    with torch.no_grad():
        assert torch.equal(hybridize.load(other)(x), y)


def test_format_1_needs_the_legacy_opt_in(tiny, tmp_path) -> None:
    path, _, x, y = tiny
    old = rewrite(path, tmp_path / "old.safetensors", rehash="1")
    with pytest.raises(CheckpointError) as info:
        hybridize.load(old)
    assert "format 1" in one_line(info) and "legacy_format=True" in str(info.value)
    with pytest.warns(UserWarning, match="format 1"):
        loaded = hybridize.load(old, legacy_format=True)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    hybridize.save(loaded, old)  # the upgrade: save it again
    assert hybridize.io.read_metadata(old)["format"] == 2
    hybridize.load(old)


# ---- item 12: what a wrong file is ----------------------------------------------------------


def test_directory_is_called_a_directory(tmp_path) -> None:
    folder = tmp_path / "run.safetensors"
    folder.mkdir()
    for fn in (hybridize.load, hybridize.io.read_metadata):
        with pytest.raises(CheckpointError) as info:
            fn(folder)
        assert "is a directory" in one_line(info)


def test_onnx_and_torch_files_are_named(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    data = helper.make_model(graph).SerializeToString()
    for name in ("m.onnx", "m.safetensors"):  # by suffix, and by content
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            hybridize.load(tmp_path / name)
        msg = one_line(info)
        assert "ONNX model" in msg and ".safetensors" in msg and "corrupted" not in msg
    assert onnx.load(str(tmp_path / "m.onnx"))  # the file really is ONNX
    torch.save({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as info:
        hybridize.load(tmp_path / "w.safetensors")
    assert "torch.save" in one_line(info)


def test_truncated_safetensors_is_still_corrupted(tiny, tmp_path) -> None:
    data = tiny[0].read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        hybridize.load(bad)
    assert "corrupted" in one_line(info)


# ---- item 7: an output equal to an input is refused before anything is written --------------


def test_same_file_helper(tmp_path) -> None:
    from hybridize._atomic import refuse_same_file

    src = tmp_path / "x.safetensors"
    src.write_bytes(b"data")
    (tmp_path / "link.safetensors").symlink_to(src)
    os.link(src, tmp_path / "hard.safetensors")
    for same in (src, tmp_path / "." / "x.safetensors", tmp_path / "link.safetensors"):
        with pytest.raises(HybridizeError) as info:
            refuse_same_file(same, None, src)
        one_line(info)
    with pytest.raises(HybridizeError):
        refuse_same_file(tmp_path / "hard.safetensors", src)
    refuse_same_file(tmp_path / "x.onnx", src, None)  # different files pass
    refuse_same_file(None, src)


@pytest.mark.parametrize(
    "args",
    [
        ["export", "{ck}", "--format", "onnx", "-o", "{ck}"],
        ["export", "{ck}", "--format", "pt2", "-o", "./{name}"],
        ["inspect", "{ck}", "--json", "{ck}"],
        ["inspect", "{ck}", "--graph", "{ck}"],
        ["convert", "test_resnet", "--weights", "{ck}", "-o", "{ck}"],
    ],
)
def test_cli_output_equal_to_input_is_refused(tiny, tmp_path, monkeypatch, capsys, args) -> None:
    ck = tmp_path / "x.safetensors"
    ck.write_bytes(tiny[0].read_bytes())
    monkeypatch.chdir(tmp_path)
    before = ck.read_bytes()
    code, err = cli([a.format(ck=ck, name=ck.name) for a in args], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "destroy the input" in err
    assert ck.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_header_length_that_looks_like_a_pickle_is_still_safetensors(tmp_path) -> None:
    """A 640-byte safetensors header starts with bytes 0x80 0x02, a pickle's magic."""
    from safetensors.torch import save_file

    path = tmp_path / "h.safetensors"
    for fill in range(700):
        save_file(
            {"w": torch.zeros(2)}, str(path), metadata={"hybridize.format": "2", "x": "f" * fill}
        )
        if path.read_bytes()[:8] == (640).to_bytes(8, "little"):
            break
    assert path.read_bytes()[:2] == b"\x80\x02"
    with pytest.raises(CheckpointError) as info:
        hybridize.io.read_metadata(path)
    assert "lacks metadata key" in one_line(info)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"example_shape": [0, 3, 32, 32]}, "holds 0, not a positive integer"),
        ({"example_shape": [1, 3, True, 32]}, "holds True, not a positive integer"),
        ({"example_shape": [1, 3, "32", 32]}, "holds 32, not a positive integer"),
        ({"example_shape": [1] * 9}, "has 9 axes and 1 elements, not an example input"),
        ({"example_shape": []}, "has 0 axes"),
        ({"example_shape": [64, 3, 1024, 1024]}, "201326592 elements, not an example input"),
        ({"example_shape": {"n": 1}}, "example_shape is a JSON dict, expected a list"),
        ({"recipe": "not json {"}, "hybridize.recipe is not valid JSON"),
        ({"recipe": [1, 2]}, "hybridize.recipe is a JSON list, expected an object"),
        ({"model": "[]"}, "hybridize.model is a JSON list, expected an object"),
    ],
)
def test_metadata_an_attacker_rehashed_is_refused_before_any_tensor_is_built(
    tiny, tmp_path, changes, expected
) -> None:
    """The hash can be recomputed by whoever edits a file (rehash="2"): these bounds are what
    stands between the metadata and ``torch.zeros(example_shape)`` or the JSON decoders."""
    bad = rewrite(tiny[0], tmp_path / "bad.safetensors", rehash="2", **changes)
    with pytest.raises(CheckpointError) as info:
        hybridize.load(bad)
    assert expected in one_line(info) and "save it again" in str(info.value)
