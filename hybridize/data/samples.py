"""Real sample images for ``inspect`` and the export parity checks: the 20-per-set images that
PyPI ``foolbox`` ships.

The folder is found with ``importlib.util.find_spec`` (foolbox itself is never imported).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

# which foolbox set to use for a given channel count
_SETS = {3: "imagenet", 1: "fashionMNIST"}


def sample_dir() -> Path | None:
    """The foolbox ``data`` folder, or None when foolbox is not installed."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if folder.is_dir() else None


def sample_images(
    channels: int, size: tuple[int, int], limit: int = 20, kind: str | None = None
) -> tuple[torch.Tensor, str] | None:
    """Up to ``limit`` real images as float32 [N, channels, H, W] in [0, 1], and their source.

    3-channel models get the ImageNet validation images, 1-channel models Fashion-MNIST; other
    channel counts repeat or average the RGB images. Returns None when no images are available.
    """
    folder = sample_dir()
    if folder is None:
        return None
    name = kind or _SETS.get(channels, "imagenet")
    files = sorted(p for p in folder.iterdir() if p.name.startswith(name + "_"))[:limit]
    if not files:
        return None
    import torch.nn.functional as F
    from PIL import Image  # torchvision's dependency; only needed here

    batch = []
    for f in files:
        with Image.open(f) as im:
            rgb = im.convert("RGB")
            x = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
            x = x.view(rgb.size[1], rgb.size[0], 3).permute(2, 0, 1).float() / 255.0
        batch.append(F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0])
    images = torch.stack(batch).clamp_(0.0, 1.0)
    if channels == 1:
        images = images.mean(dim=1, keepdim=True)
    elif channels != 3:
        images = images.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1).contiguous()
    return images, f"foolbox {name} samples ({len(files)} images from {folder})"
