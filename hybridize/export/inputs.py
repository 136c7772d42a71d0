"""The inputs a parity check runs: random tensors shaped like the example, and real images."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from hybridize._util import first_line, reraise_as
from hybridize.data.samples import sample_images
from hybridize.errors import ExportError
from hybridize.export.parity import DEFAULT_CHECK_BATCH, CheckOptions, ParityReport


def check_destination(dest: Path, suffix: str) -> Path:
    """``dest`` for a one-file export, or a one-line :class:`ExportError` when it is a folder
    (found before the export's work, not at its final rename)."""
    if dest.is_dir():
        raise ExportError(f"{dest} is a folder; give a file name, e.g. {dest / ('model' + suffix)}")
    return dest


def check_example(example: object) -> torch.Tensor:
    """``example`` detached, or a one-line :class:`ExportError` when it is not a tensor with a
    batch axis."""
    if not isinstance(example, torch.Tensor) or example.dim() < 2:
        got = (
            f"a tensor of shape {tuple(example.shape)}"
            if isinstance(example, torch.Tensor)
            else type(example).__name__
        )
        raise ExportError(
            "the example input must be a tensor with a batch axis, e.g. torch.rand(1, 3, 224, "
            f"224); got {got}"
        )
    return example.detach()


def random_inputs(example: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples uniform over the example's value range (so range-dependent encoders see
    inputs like the real ones); standard normal when the example is constant."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, *example.shape[1:])
    lo, hi = float(example.min()), float(example.max())
    if hi > lo:
        return (torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo).to(
            example.dtype
        )
    return torch.randn(shape, generator=g, dtype=example.dtype)


def real_inputs_for(
    example: torch.Tensor, real: torch.Tensor | bool | None, limit: int
) -> tuple[torch.Tensor | None, str | None]:
    """Resolve ``real``: a tensor is used as given; None/True load the foolbox sample images
    resized to the example's size (None silently skips when foolbox is missing); False skips."""
    if real is False:
        return None, None
    if isinstance(real, torch.Tensor):
        if real.shape[1:] != example.shape[1:]:
            raise ExportError(
                f"real_inputs have per-sample shape {tuple(real.shape[1:])}, the example has "
                f"{tuple(example.shape[1:])}; pass images of the example's size"
            )
        return real.to(example.dtype), "given tensor"
    if example.dim() != 4:
        return None, None
    found = sample_images(example.shape[1], (example.shape[2], example.shape[3]), limit=limit)
    if found is None:
        if real is True:
            raise ExportError(
                "real_inputs=True but no sample images were found; install foolbox==3.3.4 "
                "(it ships them) or pass real_inputs=False"
            )
        return None, None
    images, source = found
    return images.to(example.dtype), source


def chunks(x: torch.Tensor, size: int, pad: bool) -> Iterator[tuple[torch.Tensor, int]]:
    """Split ``x`` into batches of ``size``, each with its number of samples; with ``pad``
    (static-batch programs) the last batch is filled up by repeating its first sample, and only
    its own samples are counted (the repeats run, but are not compared)."""
    for start in range(0, x.shape[0], size):
        part = x[start : start + size]
        valid = part.shape[0]
        if pad and valid < size:
            part = torch.cat([part, part[:1].expand(size - valid, *part.shape[1:])])
        yield part, valid


def check_batches(
    example: torch.Tensor, options: CheckOptions, dynamic_batch: bool, report: ParityReport
) -> Iterator[tuple[str, torch.Tensor, int]]:
    """The ``(kind, batch, samples)`` a parity check runs (``samples``: the batch's own, before
    a static batch's padding): ``n_random`` random samples, then the
    real images (their source goes into ``report``); batches of ``check_batch`` (one less, or
    2 for 1, when that is the example's batch size: a dynamic batch axis is really exercised), or of
    the example's batch size, padded, for a static-batch program."""
    images, report.real_source = real_inputs_for(example, options.real_inputs, options.max_real)
    sets = [("random", random_inputs(example, options.n_random))]
    if images is not None:
        sets.append(("real", images))
    batch = (options.check_batch or DEFAULT_CHECK_BATCH) if dynamic_batch else example.shape[0]
    if dynamic_batch and batch == example.shape[0]:  # a dynamic batch is checked at another size
        batch = batch - 1 if batch > 1 else 2
    report.check_batch = batch
    for kind, data in sets:
        for x, valid in chunks(data, batch, pad=not dynamic_batch):
            yield kind, x, valid


def batch_errors(shape: tuple[int, ...], what: str) -> contextlib.AbstractContextManager[None]:
    """A check batch that ``what`` (the model, the exported graph) cannot run: one line that
    says so and points to a static batch, instead of the runtime's own error."""
    return reraise_as(
        lambda exc: ExportError(
            f"{what} does not run on a check batch of shape {shape} ({type(exc).__name__}: "
            f"{first_line(exc, 200)}); its batch axis is not dynamic: export with a static "
            "batch (--batch-size N)"
        )
    )
