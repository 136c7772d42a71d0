"""torch.export (.pt2): export, save, reload and compare with PyTorch eager."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hybridize._atomic import atomic_path
from hybridize._util import first_line
from hybridize.errors import ExportError
from hybridize.export.inputs import batch_errors, check_batches, check_destination, check_example
from hybridize.export.parity import CheckOptions, ParityCheck, ParityReport, check_options
from hybridize.export.prepare import export_state


def export_pt2(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    check: bool = True,
    options: CheckOptions | None = None,
    **overrides: Any,
) -> ParityReport:
    """Export ``model`` in eval mode with ``torch.export.export`` and save it to ``path``.

    With ``check`` the saved file is reloaded with ``torch.export.load`` and its logits compared
    with eager on random and real inputs (same rule and ``options`` / ``overrides`` as
    :func:`export_onnx`; spikes are not tapped here, since the program runs the same aten
    kernels as eager). Raises :class:`ExportError` and leaves no file on failure.
    """
    options = check_options(options, overrides)
    dest = check_destination(Path(path), ".pt2")
    example = check_example(example)
    report = ParityReport.start("pt2", str(dest), options, dynamic_batch=dynamic_batch)
    with export_state(model, example), atomic_path(dest, suffix=".partial.pt2") as tmp:
        program = _export(model, example, dynamic_batch)
        try:
            torch.export.save(program, str(tmp))
        except Exception as exc:
            raise ExportError(f"torch.export.save failed for {dest}: {exc}") from exc
        if check:
            _check_reloaded(model, torch.export.load(str(tmp)).module(), example, report, options)
        if report.ok is False:
            raise ExportError(
                f"pt2 parity check failed for {dest}: {report.message}; the file was not written"
            )
    return report


def _check_reloaded(
    model: nn.Module,
    reloaded: nn.Module,
    example: torch.Tensor,
    report: ParityReport,
    options: CheckOptions,
) -> None:
    parity = ParityCheck(report, [], [])
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for kind, x, valid in check_batches(example, options, report.dynamic_batch, report):
        with torch.no_grad():
            with batch_errors(tuple(x.shape), "the model"):
                ref = model(x.to(device))
            got = _run_reloaded(reloaded, x.to(device))
        first = [parity.first([_logits(t).cpu()], valid) for t in (ref, got)]
        parity.add(kind, first[0], first[1])
    parity.finish()


def _export(
    model: nn.Module, example: torch.Tensor, dynamic_batch: bool
) -> torch.export.ExportedProgram:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    args = (example.to(device),)
    shapes = None
    if dynamic_batch:
        shapes = ({0: torch.export.Dim.AUTO},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(model, args, dynamic_shapes=shapes)
    except Exception as exc:
        raise ExportError(
            f"torch.export.export failed: {first_line(exc)}; try --batch-size N (a static batch) "
            "or check that the model runs in eval mode on the example input"
        ) from exc


def _run_reloaded(program: nn.Module, x: torch.Tensor) -> object:
    try:
        return program(x)
    except Exception as exc:  # shape guards of a program whose batch axis was specialised
        raise ExportError(
            f"the reloaded program fails on a batch of shape {tuple(x.shape)} ({first_line(exc)}); "
            "export with a static batch (--batch-size N) instead"
        ) from exc


def _logits(out: object) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"the model returns {type(out).__name__}, not a logits tensor; export a model whose "
            "forward returns one tensor"
        )
    return out
