"""Train and eval transforms built from an :class:`InputSpec` (torchvision v2, tensor or PIL)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2

from hybridize.data.presets import InputSpec

_INTERP = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


class ExpandChannels(torch.nn.Module):
    """Repeat a 1-channel image to ``channels`` (grayscale data into an RGB model)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] == self.channels:
            return x
        if x.shape[-3] == 1:
            return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]).contiguous()
        if self.channels == 1:  # RGB data into a 1-channel model
            return x.mean(dim=-3, keepdim=True)
        raise ValueError(f"cannot map {x.shape[-3]} channels to {self.channels}")


class Clamp01(torch.nn.Module):
    """Clip to [0, 1] (bicubic resizing overshoots; the encoder expects the range)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0.0, 1.0)


def build_transform(
    spec: InputSpec, train: bool, augment: bool = True, small: bool = True, paper: bool = False
) -> v2.Compose:
    """Transform for one split.

    ``small`` data (native size <= 64 px, e.g. Fashion-MNIST, CIFAR) is resized to the model's
    size and augmented with a padded random crop; large images (ImageFolder) use a random
    resized crop for training and resize + center crop for evaluation. ``paper`` is the
    released HAS-8 recipe: flip only, inputs in [0, 1] (no mean/std).
    """
    interp = _INTERP.get(spec.interpolation, InterpolationMode.BILINEAR)
    size = spec.img_size
    ops: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if small or paper:
        ops.append(v2.Resize((size, size), interpolation=interp, antialias=True))
        if train and augment and not paper:
            ops.append(v2.RandomCrop(size, padding=max(1, size // 8), padding_mode="reflect"))
    elif train and augment:
        ops.append(v2.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=interp))
    else:
        ops.append(v2.Resize(int(round(size / spec.crop_pct)), interpolation=interp))
        ops.append(v2.CenterCrop(size))
    if train and augment:
        ops.append(v2.RandomHorizontalFlip())
    ops.append(ExpandChannels(spec.in_chans))
    ops.append(Clamp01())
    if spec.mean is not None and spec.std is not None:
        ops.append(v2.Normalize(mean=list(spec.mean), std=list(spec.std)))
    return v2.Compose(ops)
