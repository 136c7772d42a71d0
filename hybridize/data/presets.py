"""Input statistics for a model: the timm data config, with overrides and the paper preset."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hybridize._util import in_chans

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: size, channels, interpolation and normalisation."""

    img_size: int
    in_chans: int = 3
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = IMAGENET_MEAN
    std: tuple[float, ...] | None = IMAGENET_STD
    crop_pct: float = 0.875


def _model_spec(model: nn.Module) -> dict | None:
    """The ``{source, name, ...}`` record hybridize keeps on created or converted models."""
    meta = getattr(model, "hybridize_meta", None)
    if isinstance(meta, dict) and isinstance(meta.get("model"), dict):
        return meta["model"]
    spec = getattr(model, "hybridize_spec", None)
    return spec if isinstance(spec, dict) else None


def data_config(model: nn.Module) -> dict:
    """timm's data config of ``model``; for a converted model (a GraphModule without timm's
    ``pretrained_cfg``) the config of the timm architecture it was built from."""
    try:
        from timm.data import resolve_data_config
    except ImportError:
        return {}
    if getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None):
        return resolve_data_config({}, model=model)
    spec = _model_spec(model)
    if spec and spec.get("source") == "timm" and isinstance(spec.get("name"), str):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(spec["name"])
        if cfg is not None:
            return resolve_data_config({}, pretrained_cfg=cfg.to_dict())
    return {}


def input_spec(
    model: nn.Module | None = None, img_size: int | None = None, paper: bool = False
) -> InputSpec:
    """Resolve the model's timm data config; ``paper`` drops mean/std (inputs in [0, 1])."""
    cfg = data_config(model) if model is not None else {}
    size = img_size or (cfg["input_size"][-1] if "input_size" in cfg else 224)
    chans = in_chans(model) if model is not None else 3
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    if len(mean) != chans:  # timm's defaults are 3-channel; repeat/trim for other widths
        mean, std = (mean * chans)[:chans], (std * chans)[:chans]
    return InputSpec(
        img_size=int(size),
        in_chans=chans,
        interpolation=str(cfg.get("interpolation", "bilinear")),
        mean=None if paper else mean,
        std=None if paper else std,
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )
