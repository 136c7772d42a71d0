"""Hybrid checkpoints: one safetensors file, tensors = state_dict, metadata = JSON strings.

A checkpoint is data, never code: ``load`` rebuilds the base model from its recorded spec (or
takes the ``base_model`` the caller gives, for a checkpoint whose base has no spec), re-applies
the stored recipe and loads the tensors strictly.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._atomic import atomic_path
from hybridize._atomic import refuse_same_file as refuse_same_file  # public for the CLI
from hybridize._util import first_line, load_exactly
from hybridize._util import state_mismatch as state_mismatch  # public: hybridize.io.state_mismatch
from hybridize.errors import CheckpointError, HybridizeError, UntrustedCodeError

FORMAT_VERSION = 2
LEGACY_FORMAT = 1  # tensors-only hash: loads only with legacy_format=True
_KEYS = ("model", "recipe", "example_shape")
# metadata fields the checkpoint hash covers: everything that rebuilds the model
_HASHED = ("format", *_KEYS)
_MAX_EXAMPLE_NUMEL = 1 << 24  # an example input for tracing, not a data set
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        header = f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0"
        _chunk(h, header.encode())
        _chunk(h, t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def checkpoint_hash(raw: Mapping[str, str], tensors_hash: str) -> str:
    """sha256 over the stored metadata strings that rebuild the model (format, model spec,
    recipe, example shape; not the writer's version) and the tensors' :func:`content_hash`."""
    h = hashlib.sha256()
    for key in _HASHED:
        _chunk(h, key.encode())
        _chunk(h, raw.get(f"hybridize.{key}", "").encode("utf-8", "surrogatepass"))
    _chunk(h, tensors_hash.encode())
    return h.hexdigest()


def _chunk(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _tensors_of(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"state_dict entry {name!r} is {type(value).__name__}, not a tensor; "
                "safetensors checkpoints hold tensors only"
            )
        # own contiguous CPU copy: tied/shared tensors would otherwise be refused by safetensors
        out[name] = value.detach().to("cpu", copy=True).contiguous()
    return out


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a converted model carrying ``hybridize_meta``) to one safetensors file.

    The write is atomic: a temporary file in the target folder, then ``os.replace``.
    """
    from safetensors.torch import save_file

    from hybridize import __version__

    meta = getattr(model, "hybridize_meta", None)
    if not isinstance(meta, Mapping) or any(k not in meta for k in _KEYS):
        raise CheckpointError(
            "model has no complete hybridize_meta (model, recipe, example_shape); "
            "save a model returned by hybridize.convert or hybridize.load"
        )
    spec = _model_record(meta["model"])
    target = Path(path)
    if not target.parent.is_dir():
        raise CheckpointError(
            f"folder {target.parent} does not exist; create it or pick another -o path"
        )
    tensors = _tensors_of(model)
    metadata = {
        "hybridize.format": str(FORMAT_VERSION),
        "hybridize.version": __version__,
        "hybridize.model": json.dumps(spec, sort_keys=True),
        "hybridize.recipe": json.dumps(meta["recipe"], sort_keys=True),
        "hybridize.example_shape": json.dumps([int(s) for s in meta["example_shape"]]),
    }
    metadata["hybridize.sha256"] = checkpoint_hash(metadata, content_hash(tensors))
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return target


def _model_record(record: Any) -> dict[str, Any]:
    """The ``model`` entry to store: the base model's spec, else a "base model required"
    record (such a checkpoint loads with ``load(path, base_model=...)``)."""
    from hybridize.nets.recognize import BASE_REQUIRED, is_spec, required_record

    if is_spec(record):
        return dict(record)
    if not (isinstance(record, Mapping) and record.get("base_model") == BASE_REQUIRED):
        record = required_record(None, "the converted model recorded no base model spec")
    cls = str(record.get("class", ""))
    if cls.startswith(("timm.", "torchvision.")):  # the user likely expected a spec
        warnings.warn(
            f"saving without a model spec ({record.get('reason')}); load this checkpoint with "
            "hybridize.load(path, base_model=MODEL)",
            stacklevel=3,
        )
    return dict(record)


def _what_is(p: Path) -> str | None:
    """What ``p`` is when it is not a safetensors file (None: it may be one)."""
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if 2 <= n <= min(size - 8, _SAFETENSORS_MAX_HEADER) and head[8:9] == b"{":
        return None  # a plausible safetensors header: safetensors itself judges the rest
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a torch.save or torch.export .pt2 file)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (a torch.save file)"
    if p.suffix.lower() == ".onnx" or _looks_like_onnx(head):
        return "an ONNX model"
    return "not a safetensors file" if size else "an empty file"


def _looks_like_onnx(head: bytes) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, a small varint), then another of
    its fields: producer_name, producer_version, domain, model_version, doc_string, graph,
    opset_import."""
    return (
        len(head) >= 3
        and head[0] == 0x08
        and 1 <= head[1] <= 20
        and head[2] in b"\x12\x1a\x22\x28\x32\x3a\x42"
    )


def _raw_metadata(p: Path) -> dict[str, str]:
    from safetensors import safe_open

    if p.is_dir():
        raise CheckpointError(
            f"{p} is a directory, not a checkpoint file; give the .safetensors file"
        )
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}; check the path")
    kind = _what_is(p)
    if kind is not None:
        raise CheckpointError(
            f"{p} is {kind}; a hybridize checkpoint is a .safetensors file written by "
            "`hybridize convert -o` or hybridize.save"
        )
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata()
    except Exception as exc:
        raise CheckpointError(
            f"{p} is not a readable safetensors file ({type(exc).__name__}); "
            "it is corrupted or truncated: save it again"
        ) from None
    if not meta or "hybridize.format" not in meta:
        raise CheckpointError(
            f"{p} is a safetensors file without hybridize metadata (plain weights?); convert "
            "them first: `hybridize convert NAME --weights PATH -o hybrid.safetensors`, or "
            "hybridize.models.create(NAME, weights=PATH) in Python"
        )
    return meta


def _format_of(p: Path, raw: Mapping[str, str]) -> int:
    text = raw["hybridize.format"]
    if not (text.isascii() and text.isdigit() and 0 < len(text) < 6):
        raise CheckpointError(f"{p}: bad hybridize.format {text[:20]!r}; save it again")
    fmt = int(text)
    if fmt > FORMAT_VERSION:
        raise CheckpointError(
            f"{p} has checkpoint format {fmt}, newer than the supported {FORMAT_VERSION}; "
            "upgrade hybridize"
        )
    if fmt < LEGACY_FORMAT:
        raise CheckpointError(f"{p}: bad hybridize.format {text!r}; save it again")
    return fmt


def _decode(p: Path, key: str, text: str) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(
            f"{p}: metadata hybridize.{key} is not valid JSON; save it again"
        ) from None
    expected = list if key == "example_shape" else dict
    if not isinstance(value, expected):
        raise CheckpointError(
            f"{p}: metadata hybridize.{key} is a JSON {type(value).__name__}, expected "
            f"{'a list' if expected is list else 'an object'}; save it again"
        )
    if key == "example_shape":
        numel = 1
        for n in value:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise CheckpointError(
                    f"{p}: metadata hybridize.example_shape holds {str(n)[:20]}, not a positive "
                    "integer; save it again"
                )
            numel *= n
        if not 1 <= len(value) <= 8 or numel > _MAX_EXAMPLE_NUMEL:
            raise CheckpointError(
                f"{p}: metadata hybridize.example_shape has {len(value)} axes and "
                f"{numel} elements, not an example input; save it again"
            )
    return value


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of a checkpoint (format, version, model, recipe, example_shape, sha256).

    Only decoded and type-checked: :func:`load` also verifies the hash.
    """
    p = Path(path)
    return _decoded(p, _raw_metadata(p))


def _decoded(p: Path, raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"format": _format_of(p, raw), "version": raw.get("hybridize.version")}
    for key in (*_KEYS, "sha256"):
        text = raw.get(f"hybridize.{key}")
        if text is None:
            raise CheckpointError(f"{p} lacks metadata key hybridize.{key}; save it again")
        out[key] = text if key == "sha256" else _decode(p, key, text)
    return out


def _verify(
    p: Path,
    raw: Mapping[str, str],
    fmt: int,
    tensors: Mapping[str, torch.Tensor],
    stored: str,
    legacy_format: bool,
) -> None:
    tensors_hash = content_hash(tensors)
    if fmt == LEGACY_FORMAT:
        if not legacy_format:
            raise CheckpointError(
                f"{p} has checkpoint format 1, whose hash does not cover the metadata; if you "
                "trust it, load it once with hybridize.load(path, legacy_format=True) and save "
                "it again (format 2)"
            )
        warnings.warn(
            f"{p}: checkpoint format 1: its metadata (model spec, recipe) is not covered by "
            "the hash; save it again to upgrade to format 2",
            stacklevel=3,
        )
        expected = tensors_hash
    else:
        expected = checkpoint_hash(raw, tensors_hash)
    if expected != stored:
        raise CheckpointError(
            f"{p}: content hash mismatch: the tensors or the metadata (model spec, recipe, "
            "example shape) changed after saving; use the original file or save it again"
        )


def load(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    base_model: nn.Module | None = None,
    trust_code: bool | None = None,
    legacy_format: bool = False,
) -> nn.Module:
    """Rebuild a saved hybrid: base model from its spec -> convert with the recipe -> tensors.

    ``base_model`` (the unconverted model the hybrid was made from, any weights) replaces the
    rebuild from the spec; a checkpoint saved without a spec ("base model required") needs it.
    The file is data: its hash (tensors and the metadata that rebuilds the model) is checked
    first, and code it names (a ``module:callable`` model, a recipe import) runs only with
    ``trust_code=True`` (None: as set by :func:`hybridize.trusting_code`; default no).
    ``legacy_format=True`` accepts format 1 files, whose hash covers the tensors only.
    """
    from safetensors.torch import load_file

    from hybridize._trust import code_trusted

    p = Path(path)
    raw = _raw_metadata(p)
    meta = _decoded(p, raw)
    trusted = code_trusted() if trust_code is None else bool(trust_code)
    if base_model is None:
        _refuse_spec_less(p, meta["model"])
        _refuse_untrusted(p, meta, trusted)
    else:
        _check_base(p, base_model)
    try:
        tensors = load_file(str(p), device="cpu")
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the tensors of {p} ({type(exc).__name__}); the file is corrupted: save it again"
        ) from None
    _verify(p, raw, meta["format"], tensors, meta["sha256"], legacy_format)
    model = _rebuild(p, meta, base_model, trusted)
    fix = (
        "pass the model it was converted from (same architecture, num_classes, in_chans)"
        if base_model is not None
        else "it was saved by an incompatible hybridize version"
    )
    what = "the given base_model" if base_model is not None else "the rebuilt model"
    load_exactly(
        model,
        tensors,
        lambda why: CheckpointError(f"{p}: tensors do not fit {what} ({why}); {fix}"),
    )
    stored = {k: meta[k] for k in _KEYS}
    found = getattr(model, "hybridize_meta", None)
    current: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    if base_model is not None:
        from hybridize.nets.recognize import is_spec

        # a given base that has a spec upgrades a spec-less checkpoint when saved again
        if is_spec(current.get("model")):
            stored["model"] = current["model"]
    model.hybridize_meta = {**current, **stored}  # type: ignore[assignment]
    return model.to(map_location).eval()


def _rebuild(
    p: Path, meta: Mapping[str, Any], base_model: nn.Module | None, trusted: bool
) -> nn.Module:
    """The hybrid before its tensors: the base (rebuilt from the spec, or given) converted
    with the stored recipe."""
    from hybridize._trust import exactly
    from hybridize.conversion import convert as convert_regions
    from hybridize.nets.factory import create_from_spec

    # traced where the given base lives (a CUDA model stays there until map_location)
    state = base_model.state_dict() if base_model is not None else {}
    where = next((t.device for t in state.values()), torch.device("cpu"))
    example = torch.zeros(meta["example_shape"], device=where)
    try:
        with exactly(trusted):
            if base_model is None:
                base = create_from_spec(meta["model"], trust_code=trusted)
                return convert_regions(base, meta["recipe"], example_input=example)
            return convert(base_model, meta["recipe"], example_input=example)  # records its spec
    except UntrustedCodeError as exc:
        raise UntrustedCodeError(f"{p}: {exc}") from None
    except HybridizeError as exc:
        what = "convert the given base_model" if base_model is not None else "rebuild the model"
        raise CheckpointError(f"{p}: cannot {what} ({first_line(exc, 200)})") from None


def _refuse_spec_less(p: Path, record: Any) -> None:
    """A checkpoint without a base model spec loads only on a given base model."""
    from hybridize.nets.recognize import BASE_REQUIRED

    if isinstance(record, Mapping) and record.get("base_model") == BASE_REQUIRED:
        cls = str(record.get("class", "model"))
        raise CheckpointError(
            f"{p} stores no model spec (base model required: its {cls.rsplit('.', 1)[-1]} base "
            "has none); load it in Python with "
            "hybridize.load(path, base_model=MODEL), MODEL being the unconverted model it was "
            "converted from"
        )


def _check_base(p: Path, base_model: Any) -> None:
    if not isinstance(base_model, nn.Module):
        raise CheckpointError(
            f"base_model must be an nn.Module (the unconverted model), got "
            f"{type(base_model).__name__}"
        )
    if isinstance(getattr(base_model, "hybridize_meta", None), Mapping):
        raise CheckpointError(
            f"base_model for {p} is already a converted hybrid; pass the unconverted model it "
            "was converted from"
        )


def _refuse_untrusted(p: Path, meta: Mapping[str, Any], trusted: bool) -> None:
    """Stop before reading tensors when the file names code and the caller did not opt in."""
    from hybridize.nets.factory import check_spec

    try:
        source, name, _ = check_spec(meta["model"])
    except HybridizeError as exc:
        raise CheckpointError(f"{p}: cannot rebuild the model ({exc})") from None
    if trusted:
        return
    from hybridize._trust import refuse

    if source == "entrypoint":
        raise UntrustedCodeError(
            f"{p}: {refuse(f'the model spec names the Python entry point {name!r}')}"
        )


def convert(
    model: nn.Module, recipe: Any = "has8", example_input: torch.Tensor | None = None
) -> nn.Module:
    """``hybridize.convert``: the conversion, with the record a checkpoint needs to rebuild
    the base (a timm or torchvision model is recognized from its own config; anything else
    is saved as "base model required" and loads with ``load(path, base_model=...)``)."""
    from hybridize.conversion import convert as convert_regions
    from hybridize.nets.recognize import base_spec

    spec = base_spec(model) if isinstance(model, nn.Module) else None
    return convert_regions(model, recipe, example_input, base_spec=spec)
