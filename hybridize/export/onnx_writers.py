"""The two ways torch writes an ONNX graph, and the choice between them.

``torchscript`` is torch's TorchScript-based exporter (``dynamo=False``): fast, no extra package,
the path every parity measurement in docs/export.md was taken on. ``dynamo`` goes through
``torch.export`` and onnxscript's ATen library (``dynamo=True``): it exports ops the older one
cannot (HaloNet's ``Tensor.unfold`` on a padded input: "input size not accessible") and is the
one torch develops. ``auto`` tries ``torchscript`` and falls back to ``dynamo`` where it fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hybridize._util import first_line
from hybridize.errors import ExportError

EXPORTERS = ("auto", "torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18  # the dynamo exporter's own opset; lower ones need a version conversion
DEFAULT_OPSET = 17  # auto falls back to dynamo (opset 18) only from this opset up


def opset_range(exporter: str = "auto") -> tuple[int, int]:
    """The opsets ``exporter`` can write (inclusive). The TorchScript exporter stops at its own
    maximum (20 with torch 2.4+); dynamo writes opset 18 and converts it up to the newest opset
    the installed onnx package defines (a lower one is raised to 18). ``auto`` spans both: above
    the TorchScript maximum it goes to dynamo directly."""
    low, high = _torchscript_opsets()
    if exporter == "torchscript":
        return low, high
    return low, max(high, _onnx_max_opset())


def _torchscript_opsets() -> tuple[int, int]:
    try:
        from torch.onnx import _constants as c

        return int(c.ONNX_MIN_OPSET), int(c.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):  # private constants moved: the range of torch 2.4+
        return 7, 20


def _onnx_max_opset() -> int:
    try:
        import onnx.defs

        return int(onnx.defs.onnx_opset_version())
    except ImportError:  # no onnx: export refuses later with the install hint
        return DYNAMO_MIN_OPSET


def check_opset(opset: object, exporter: str = "auto") -> None:
    """Raise a one-line :class:`ExportError` for an opset ``exporter`` cannot write."""
    low, high = opset_range(exporter)
    ok = isinstance(opset, int) and not isinstance(opset, bool) and low <= opset <= high
    if not ok:
        with_ = "" if exporter == "auto" else f" with --exporter {exporter}"
        raise ExportError(
            f"--opset {opset!r} is not supported{with_}; give {low} to {high} (default 17)"
        )


def check_exporter(exporter: object) -> str:
    """``exporter`` if it is one of :data:`EXPORTERS`, else a one-line :class:`ExportError`."""
    if exporter not in EXPORTERS:
        raise ExportError(f"--exporter {exporter!r} is not one of {', '.join(EXPORTERS)}")
    return str(exporter)


@dataclass(frozen=True)
class OnnxJob:
    """What to write: ``module`` traced on ``example`` into ``dest``, with one input ``input``
    and the outputs ``output_names``; ``output_axes`` are the outputs' dynamic axes (the
    TorchScript exporter needs them spelled out; dynamo derives them from the input's)."""

    module: nn.Module
    example: torch.Tensor
    dest: Path
    opset: int
    dynamic_batch: bool
    output_names: list[str]
    output_axes: dict[str, dict[int, str]]


def write_onnx(job: OnnxJob, exporter: str) -> tuple[str, int]:
    """Write ``job`` with ``exporter`` (one of :data:`EXPORTERS`); returns the exporter that
    wrote the file and its opset."""
    if exporter != "auto":
        return _WRITERS[exporter](job)
    if job.opset > _torchscript_opsets()[1]:  # only dynamo writes it
        return _dynamo(job)
    try:
        return _torchscript(job)
    except ExportError as first:
        if job.opset < DEFAULT_OPSET:  # an older opset asked for: the fallback would raise it
            raise
        if importlib.util.find_spec("onnxscript") is None:
            raise ExportError(
                f"{first}; the dynamo exporter may export it: pip install onnxscript "
                "(or pip install 'hybridize[export]'), then --exporter dynamo"
            ) from first
        try:
            return _dynamo(job)
        except ExportError as second:
            raise ExportError(f"both ONNX exporters failed: {first}; and {second}") from second


def _torchscript(job: OnnxJob) -> tuple[str, int]:
    axes = {"input": {0: "batch"}, **job.output_axes} if job.dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings(), _native_stdout_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                job.module,
                (job.example,),
                str(job.dest),
                dynamo=False,
                opset_version=job.opset,
                input_names=["input"],
                output_names=job.output_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter's errors name the op; keep them on one line
        raise ExportError(
            f"torch.onnx.export (opset {job.opset}) failed: {first_line(exc)}; try another "
            "--opset, or check that the model runs in eval mode on the example input"
        ) from exc
    return "torchscript", job.opset


def _dynamo(job: OnnxJob) -> tuple[str, int]:
    if importlib.util.find_spec("onnxscript") is None:
        raise ExportError(
            "the dynamo ONNX exporter needs onnxscript, not installed here: pip install "
            "onnxscript (or pip install 'hybridize[export]')"
        )
    opset = max(job.opset, DYNAMO_MIN_OPSET)
    shapes = ({0: torch.export.Dim.AUTO},) if job.dynamic_batch else None
    try:
        with torch.no_grad(), warnings.catch_warnings(), _quiet_dynamo_logs():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                job.module,
                (job.example,),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=job.output_names,
                dynamic_shapes=shapes,
                verbose=False,
                # onnxscript's graph optimiser took 309 s against 111 s for the whole export of
                # a HaloNet-26 hybrid, for a file onnxruntime runs no faster (it optimises on load)
                optimize=False,
            )
            if program is None:  # only when given a file name, which this call does not
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(job.dest))
    except Exception as exc:
        raise ExportError(
            f"torch.onnx.export(dynamo=True, opset {opset}) failed: {first_line(exc)}"
        ) from exc
    return "dynamo", opset


_WRITERS = {"torchscript": _torchscript, "dynamo": _dynamo}


@contextlib.contextmanager
def _quiet_dynamo_logs() -> Iterator[None]:
    """The dynamo exporter reports each step on the root logger at INFO/WARNING level."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Silence file descriptor 1 (not just ``sys.stdout``): on a failure the TorchScript
    exporter's C++ logger writes the whole graph IR there (its log switch is left on)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no fd 1 (embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
