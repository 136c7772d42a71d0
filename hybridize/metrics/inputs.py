"""Inputs for ``inspect`` given by name: real sample images, random tensors or a data set."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from hybridize._util import example_shape
from hybridize.errors import HybridizeError


def input_shape(model: nn.Module, img_size: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) of :func:`hybridize._util.example_shape`: the checkpoint's, else the model's
    configured input size; an input that is not an image is refused."""
    shape = example_shape(model, img_size)
    if len(shape) != 4:
        raise HybridizeError(
            f"inspect: the model takes inputs of shape {list(shape)}, not images (N, C, H, W); "
            "pass the input batches as tensors instead of a name"
        )
    return shape[1], shape[2], shape[3]


def resolve_data_name(data: str) -> str:
    """``auto`` -> ``samples`` when the sample images are installed, else ``random``."""
    if data != "auto":
        return data
    from hybridize.data.samples import sample_dir

    return "samples" if sample_dir() is not None else "random"


def named_inputs(
    model: nn.Module,
    data: str,
    *,
    batches: int = 1,
    batch_size: int = 8,
    img_size: int | None = None,
    data_root: str | None = None,
) -> Iterable[torch.Tensor]:
    """Batches for ``data``: ``samples`` (the foolbox real images, normalised like the model's
    data config; ``pip install 'hybridize[samples]'``), ``random`` (uniform [0, 1], seeded),
    ``auto`` (``samples`` when installed, else ``random``) or a data set name known to
    ``hybridize.data`` (its eval split, first ``batches * batch_size`` images)."""
    if batches < 1 or batch_size < 1:
        raise HybridizeError(f"--batches {batches} / --batch-size {batch_size}: give values >= 1")
    if img_size is not None and img_size < 1:
        raise HybridizeError(f"--img-size {img_size}: give a positive size in pixels")
    data = resolve_data_name(data)
    c, h, w = input_shape(model, img_size)
    n = batches * batch_size
    if data == "random":
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, c, h, w, generator=g)
        return list(x.split(batch_size))
    if data == "samples":
        from hybridize.data import input_spec
        from hybridize.data.samples import sample_images

        found = sample_images(c, (h, w), limit=n)
        if found is None:
            raise HybridizeError(
                "--data samples needs the sample images of the samples extra: "
                "pip install 'hybridize[samples]' (or use --data random / a data set name)"
            )
        x = found[0]
        spec = input_spec(model)
        if spec.mean is not None and spec.std is not None and len(spec.mean) == c:
            mean = torch.tensor(spec.mean).view(1, c, 1, 1)
            x = (x - mean) / torch.tensor(spec.std).view(1, c, 1, 1)
        return list(x.split(batch_size))
    from hybridize.data import eval_loader

    options = dict(batch_size=batch_size, img_size=h, data_root=data_root, workers=0)
    return eval_loader(data, model, limit=n, **options)
