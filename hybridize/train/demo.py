"""The demo experiment: a pretrained ImageNet EfficientNet-Lite0 and its ``has8-finetune``
hybrid, fine-tuned the same way on a Fashion-MNIST subset and evaluated side by side."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from hybridize.train.errors import TrainError
from hybridize.train.loop import FinetuneResult, finetune
from hybridize.train.progress import ProgressCallback, resolve_progress
from hybridize.train.report import write_json

MODEL = "tf_efficientnet_lite0"
RECIPE = "has8-finetune"
CLASSES = 10  # Fashion-MNIST

# Sized by measurement on 2 shared CPU cores (docs/training.md): the hybrid's train step at
# 32 px is ~7-8x the ANN's; 180 hybrid steps take about 5 minutes of an idle 2-core machine.
DEMO: dict[str, Any] = dict(img_size=32, batch_size=32, limit_train=5760, limit_eval=1000, epochs=1)
FULL: dict[str, Any] = dict(
    img_size=64, batch_size=128, limit_train=None, limit_eval=None, epochs=3
)


@dataclass(frozen=True)
class DemoRow:
    """One model's figures after the demo's fine-tuning (fractions, images per second)."""

    top1: float
    top5: float
    eval_loss: float
    params: int
    train_images_per_s: float
    eval_images_per_s: float | None
    firing_rate: float | None  # None for the ANN
    gate_mean: float | None  # mean of the fusion blocks' gates; None for the ANN
    time_s: float
    checkpoint: str


@dataclass(frozen=True)
class DemoResult:
    """The ANN beside its hybrid; ``settings`` are the model, recipe and sizes used."""

    settings: dict[str, Any]
    ann: DemoRow
    hybrid: DemoRow
    out: Path

    def to_dict(self) -> dict[str, Any]:
        """The content of ``out/summary.json``."""
        return {"config": self.settings, "ann": asdict(self.ann), "hybrid": asdict(self.hybrid)}


def demo_sizes(full: bool = False, **given: int | None) -> dict[str, Any]:
    """The demo's sizes (:data:`DEMO`, or :data:`FULL`), with the non-None ``given`` ones."""
    unknown = sorted(set(given) - set(DEMO))
    if unknown:
        raise TrainError(f"unknown demo option {unknown[0]!r}: choose from {', '.join(DEMO)}")
    sizes = dict(FULL if full else DEMO)
    sizes.update({k: v for k, v in given.items() if v is not None})
    return sizes


def run_demo(
    out: str | Path = "runs/demo",
    *,
    full: bool = False,
    data_root: str | None = None,
    weights: str | None = None,
    lr: float = 5e-3,
    ann_lr_scale: float = 0.2,
    device: str | None = None,
    workers: int | None = None,
    model: str = MODEL,
    pretrained: bool = True,
    progress: ProgressCallback | bool = True,
    **sizes: int | None,
) -> DemoResult:
    """Fine-tune the pretrained ``model`` and its ``has8-finetune`` hybrid the same way on
    Fashion-MNIST; each run goes to ``out/ann`` and ``out/hybrid``, the figures to
    ``out/summary.json``. ``sizes``: ``img_size``, ``batch_size``, ``limit_train``,
    ``limit_eval``, ``epochs`` (default :data:`DEMO`, or :data:`FULL` with ``full``).
    ``weights``: a local ImageNet weights file instead of the pretrained download."""
    out = Path(out)
    base = demo_sizes(full, **sizes)
    settings = {"model": model, "recipe": RECIPE, **base}
    if progress is not False:
        resolve_progress(progress).note(
            f"demo: {model} (ImageNet) -> {RECIPE} hybrid, Fashion-MNIST "
            f"{base['limit_train'] or 'all'} train / {base['limit_eval'] or 'all'} eval images, "
            f"{base['img_size']} px, {base['epochs']} epoch(s), batch {base['batch_size']}"
        )
    out.mkdir(parents=True, exist_ok=True)
    common = dict(
        data_root=data_root, lr=lr, ann_lr_scale=ann_lr_scale, device=device, workers=workers,
        progress=progress, seed=0, **base,
    )  # fmt: skip
    rows = {}
    for tag in ("ann", "hybrid"):
        t0 = time.perf_counter()
        net = _pretrained(model, weights, pretrained and weights is None)
        if tag == "hybrid":
            net = _convert(net, base["img_size"])
        result = finetune(net, "fashion-mnist", out=out / tag, tag=tag, **common)
        rows[tag] = _row(result, time.perf_counter() - t0)
    demo = DemoResult(settings, rows["ann"], rows["hybrid"], out)
    write_json(out / "summary.json", demo.to_dict())
    return demo


def _pretrained(model: str, weights: str | None, pretrained: bool) -> nn.Module:
    import torch

    from hybridize.models import create

    torch.manual_seed(0)  # the same new 10-class head for both models
    return create(model, pretrained=pretrained, weights=weights, num_classes=CLASSES)


def _convert(model: nn.Module, size: int) -> nn.Module:
    import torch

    from hybridize.conversion import convert

    return convert(model, RECIPE, example_input=torch.zeros(1, 3, size, size))


def _row(result: FinetuneResult, seconds: float) -> DemoRow:
    last = result.history[-1]
    gates = last.get("gates") or {}
    return DemoRow(
        top1=last["eval_top1"],
        top5=last["eval_top5"],
        eval_loss=last["eval_loss"],
        params=sum(p.numel() for p in result.model.parameters()),
        train_images_per_s=last["images_per_s"],
        eval_images_per_s=last.get("eval_images_per_s"),
        firing_rate=last.get("firing_rate"),
        gate_mean=sum(gates.values()) / len(gates) if gates else None,
        time_s=seconds,
        checkpoint=str(result.last),
    )
