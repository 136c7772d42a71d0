"""Small helpers the layers above ``spiking`` share: module names, parameter counts, input
shapes, output hooks, strict loads, metrics files, network timeouts and the first line of an
error. Imports torch and ``hybridize.errors`` only."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from torch import Tensor, nn

from hybridize.errors import HybridizeError, is_out_of_memory

_DEFAULT_IMAGE = (224, 224)


# seconds one network operation (connect, one read) may wait; a server that accepts and then
# says nothing fails after this. HYBRIDIZE_DOWNLOAD_TIMEOUT overrides it.
DOWNLOAD_TIMEOUT_S = 30.0


def download_timeout() -> float:
    """The per-operation network timeout in seconds (HYBRIDIZE_DOWNLOAD_TIMEOUT, else 30)."""
    text = os.environ.get("HYBRIDIZE_DOWNLOAD_TIMEOUT", "").strip()
    try:
        value = float(text) if text else DOWNLOAD_TIMEOUT_S
    except ValueError:
        value = DOWNLOAD_TIMEOUT_S
    return value if value > 0 else DOWNLOAD_TIMEOUT_S


@contextlib.contextmanager
def network_timeout() -> Iterator[None]:
    """Inside the block, sockets opened without a timeout (a library's urlopen) get
    :func:`download_timeout`: a silent server fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout())
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def read_json_lines(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (blank lines skipped); a line that is not JSON, such as
    one cut short by a killed writer, is a one-line error naming it."""
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise HybridizeError(f"cannot read {p} ({exc.strerror or exc})") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HybridizeError(
                    f"{p}:{i} is not valid JSON ({exc.msg}); fix or remove that line"
                ) from None
    return rows


def missing_packages(names: Iterable[str]) -> list[str]:
    """The packages among ``names`` that are not installed (found without importing them)."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of ``exc``'s message (long library messages span many lines), cut to
    ``limit`` characters with ``...``; the exception's type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else type(exc).__name__
    if limit is not None and len(text) > limit:
        return text[: limit - 3] + "..."
    return text


@contextlib.contextmanager
def reraise_as(make: Callable[[Exception], HybridizeError]) -> Iterator[None]:
    """Within the block, an error from code we do not own (the user's model, a runtime)
    becomes our one-line ``make(exc)``; our own errors and out-of-memory (short for any input,
    not the input's fault) pass through unchanged."""
    try:
        yield
    except HybridizeError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise make(exc) from exc


def model_input_errors(
    shape: tuple[int, ...], make: Callable[[str], HybridizeError]
) -> contextlib.AbstractContextManager[None]:
    """:func:`reraise_as` for a model run on a user's input of ``shape``: an error the model
    raises (timm's patch embedding asserting its image size, a position table of another
    length) names the shape and the size to change."""
    return reraise_as(
        lambda exc: make(
            f"the model does not run on an input of shape {tuple(shape)} "
            f"({type(exc).__name__}: {first_line(exc, 200)}); pass an image size the model "
            "accepts (--img-size), usually the one it was converted at"
        )
    )


def param_count(module: nn.Module) -> int:
    """The number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters())


def fresh_attr(owner: nn.Module, stem: str, *, bare: bool = False) -> str:
    """The first name that is not yet an attribute of ``owner``: ``stem0``, ``stem1``, ... or,
    with ``bare``, ``stem`` itself, then ``stem_1``, ``stem_2``, ..."""
    names: Iterator[str]
    if bare:
        names = itertools.chain([stem], (f"{stem}_{i}" for i in itertools.count(1)))
    else:
        names = (f"{stem}{i}" for i in itertools.count())
    return next(n for n in names if not hasattr(owner, n))


def is_within(name: str, outer: str, *, strict: bool = False) -> bool:
    """Whether the dotted module name ``name`` is ``outer`` or lies inside it (``a.b`` is in
    ``a``, ``ab`` is not); ``strict`` excludes ``name == outer``."""
    return name.startswith(outer + ".") or (not strict and name == outer)


@contextlib.contextmanager
def record_outputs(
    modules: Iterable[tuple[str, nn.Module]], record: Callable[[str, Any], None]
) -> Iterator[None]:
    """While open, every forward of each named module calls ``record(name, output)``; the hooks
    are removed on exit, also when the body raises."""
    handles = []

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        return lambda _module, _inputs, output: record(name, output)

    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()


def in_chans(model: nn.Module) -> int:
    """The input channels of an image model: its own ``in_chans`` (timm), else timm's configured
    input size, else the first ``Conv2d``'s input channels, else 3."""
    own = getattr(model, "in_chans", None)
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    size = _configured_size(model)
    if size is not None:
        return size[0]
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv.in_channels if conv is not None else 3


def example_shape(model: nn.Module, img_size: int | None = None) -> tuple[int, ...]:
    """The input shape ``model`` takes, batch 1: the shape recorded when it was converted
    (``hybridize_meta['example_shape']``), else timm's configured input size with the model's
    input channels, else ``(1, in_chans, 224, 224)``. ``img_size`` replaces height and width of
    an image shape."""
    meta = getattr(model, "hybridize_meta", None)
    recorded = meta.get("example_shape") if isinstance(meta, dict) else None
    if isinstance(recorded, list | tuple) and len(recorded) >= 2:
        shape = [1, *(int(s) for s in recorded[1:])]
    else:
        size = _configured_size(model)
        shape = [1, in_chans(model), *(size[1:] if size is not None else _DEFAULT_IMAGE)]
    if img_size is not None and len(shape) == 4:
        shape[2] = shape[3] = int(img_size)
    return tuple(shape)


def _configured_size(model: nn.Module) -> tuple[int, ...] | None:
    """timm's ``input_size`` (C, H, W) from the model's pretrained config, when it has one."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(int(s) for s in cfg["input_size"])
    return None


def state_mismatch(
    own: Mapping[str, Tensor], given: Mapping[str, Tensor], limit: int = 3
) -> str | None:
    """Why ``given`` does not load strictly into a module whose state is ``own``: the first
    few missing and unexpected names and shape mismatches (None: it loads)."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [k for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:limit])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {', '.join(unexpected[:limit])}")
    if shapes:
        shown = "; ".join(
            f"{k} is {tuple(given[k].shape)} in the file, {tuple(own[k].shape)} here"
            for k in shapes[: max(1, limit - 1)]
        )
        parts.append(f"{len(shapes)} of other shape, e.g. {shown}")
    return "; ".join(parts) or None


def load_exactly(
    model: nn.Module, tensors: Mapping[str, Tensor], error: Callable[[str], Exception]
) -> None:
    """``model.load_state_dict(tensors, strict=True)`` (its load hooks included, such as the
    LIF's renaming of an older key), raising ``error(why)`` with the one-line reason from
    :func:`state_mismatch` instead of torch's many-line message when it refuses them."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        why = state_mismatch(model.state_dict(), tensors) or first_line(exc, 200)
        raise error(why) from None
