"""Fuzz the metadata of a real checkpoint: every load succeeds or fails with one short line,
runs nothing the file names, and leaves nothing on disk (issue 14)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hybridize
from hybridize.errors import HybridizeError

SENTINEL = "hybridize_ckpt_fuzz_sentinel"  # its import would create MARKER
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tensors, raw metadata) of a small saved hybrid, and the sentinel's marker file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    torch.manual_seed(0)
    base = hybridize.create_model("test_resnet", num_classes=3)
    model = hybridize.convert(base, "has8", example_input=torch.zeros(1, 3, 32, 32))
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "tiny.safetensors"
    hybridize.save(model, path)
    with safe_open(str(path), framework="pt") as f:
        raw = dict(f.metadata())
    marker = folder / "sentinel.marker"
    (folder / f"{SENTINEL}.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "def build(**kw):\n    raise SystemExit('ran')\n"
        "def fn(x):\n    return x\n"
    )
    sys.path.insert(0, str(folder))
    yield load_file(str(path)), raw, marker
    sys.path.remove(str(folder))


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        [
            "entrypoint",
            f"{SENTINEL}:build",
            f"{SENTINEL}.fn",
            "os:system",
            "has8",
            "timm",
            "torchvision",
            "test_resnet",
            "checkpoint_path",
        ]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value, prefix=()):
    """Every (path, leaf-or-container) of a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    out = json.loads(json.dumps(value))
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = new
    return out


@st.composite
def metadata_edit(draw, raw):
    key = draw(st.sampled_from(["format", "version", "model", "recipe", "example_shape", "sha256"]))
    text = raw[f"hybridize.{key}"]
    how = draw(st.sampled_from(["json", "text", "mutate"]))
    if how == "json":
        new = json.dumps(draw(JSON))
    elif how == "text":
        new = draw(st.text(max_size=40))
    else:  # keep the real structure and change one place in it
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        paths = list(_paths(value))
        new = json.dumps(_replace(value, draw(st.sampled_from(paths)), draw(JSON)))
    return key, new, draw(st.booleans())


@FUZZ
@given(data=st.data())
def test_fuzzed_metadata(tiny, data) -> None:
    from safetensors.torch import save_file

    tensors, raw, marker = tiny
    key, new, rehash = data.draw(metadata_edit(raw))
    meta = {**raw, f"hybridize.{key}": new}
    if rehash:  # an attacker recomputes the hash; the load must still run nothing
        meta["hybridize.sha256"] = hybridize.io.checkpoint_hash(
            meta, hybridize.io.content_hash(tensors)
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.safetensors"
        save_file(tensors, str(path), metadata=meta)
        try:
            model = hybridize.load(path)
        except HybridizeError as exc:
            msg = str(exc)
            assert msg and "\n" not in msg and len(msg) < 800, msg[:2000]
        else:  # loaded: then it is the same model (the edit changed nothing it rebuilds from)
            assert rehash or key in ("version",) or new == raw[f"hybridize.{key}"]
            assert set(model.state_dict()) == set(tensors)
        assert [p.name for p in Path(tmp).iterdir()] == ["f.safetensors"]
    assert not marker.exists() and SENTINEL not in sys.modules
