"""torch.export (.pt2): export, save, reload and compare with PyTorch eager."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from hybridize._atomic import remove_quietly, temp_beside
from hybridize.errors import ExportError
from hybridize.export.inputs import chunks, random_inputs, real_inputs_for
from hybridize.export.onnx_export import _validate_example
from hybridize.export.parity import ATOL, MIN_TOP1, RTOL, ParityCheck, ParityReport
from hybridize.export.prepare import export_state


def export_pt2(
    model: nn.Module,
    example: torch.Tensor,
    path: str | os.PathLike,
    *,
    dynamic_batch: bool = True,
    check: bool = True,
    real_inputs: torch.Tensor | bool | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    min_top1: float = MIN_TOP1,
    n_random: int = 4,
    max_real: int = 20,
    check_batch: int = 4,
) -> ParityReport:
    """Export ``model`` in eval mode with ``torch.export.export`` and save it to ``path``.

    With ``check`` the saved file is reloaded with ``torch.export.load`` and its logits compared
    with eager on random and real inputs (same rule as :func:`export_onnx`; spikes are not
    tapped here, since the program runs the same aten kernels as eager). Raises
    :class:`ExportError` and leaves no file on failure.
    """
    dest = Path(path)
    example = _validate_example(example)
    report = ParityReport(format="pt2", path=str(dest), dynamic_batch=dynamic_batch)
    report.atol, report.rtol, report.min_top1 = atol, rtol, min_top1
    tmp = temp_beside(dest, "pt2")
    try:
        with export_state(model):
            program = _export(model, example, dynamic_batch)
            try:
                torch.export.save(program, str(tmp))
            except Exception as exc:
                raise ExportError(f"torch.export.save failed for {dest}: {exc}") from exc
            if check:
                reloaded = torch.export.load(str(tmp)).module()
                parity = ParityCheck(report, [], [])
                batch = check_batch if dynamic_batch else example.shape[0]
                images, report.real_source = real_inputs_for(example, real_inputs, max_real)
                sets = [("random", random_inputs(example, n_random))]
                if images is not None:
                    sets.append(("real", images))
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
                for kind, data in sets:
                    for x in chunks(data, batch, pad=not dynamic_batch):
                        with torch.no_grad():
                            ref = model(x.to(device))
                            got = _run_reloaded(reloaded, x.to(device))
                        parity.add(kind, [_logits(ref).cpu()], [_logits(got).cpu()])
                parity.finish()
        if report.ok is False:
            raise ExportError(
                f"pt2 parity check failed for {dest}: {report.message}; the file was not written"
            )
        os.replace(tmp, dest)
        return report
    finally:
        remove_quietly(tmp)


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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"torch.export.export failed: {first}; try --batch-size N (a static batch) or "
            "check that the model runs in eval mode on the example input"
        ) from exc


def _run_reloaded(program: nn.Module, x: torch.Tensor) -> object:
    try:
        return program(x)
    except Exception as exc:  # shape guards of a program whose batch axis was specialised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the reloaded program fails on a batch of shape {tuple(x.shape)} ({first}); "
            "export with a static batch (--batch-size N) instead"
        ) from exc


def _logits(out: object) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"the model returns {type(out).__name__}, not a logits tensor; export a model whose "
            "forward returns one tensor"
        )
    return out
