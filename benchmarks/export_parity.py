"""Measure ONNX export parity of converted hybrids (max |d logits|, top-1, spike flips).

    .venv/bin/python benchmarks/export_parity.py [--img-size 32] [--models resnet10t:has8 ...]

Each model is converted (random weights unless --pretrained), BN statistics and encoder ranges
are calibrated with a few train-mode passes on random inputs, fusion gates are set to 1 (so the
spiking path reaches the logits), and export_onnx runs its check on random and real images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import hybridize

DEFAULT = (
    "resnet10t:has8",
    "resnet18:has8",
    "tf_efficientnet_lite0:has8-finetune",
    "resnet18:replace-blocks",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(DEFAULT), help="NAME:RECIPE pairs")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--pretrained", action="store_true", help="offline pretrained weights")
    ap.add_argument("--max-real", type=int, default=20)
    args = ap.parse_args()
    from hybridize.spiking import FusionBlock

    torch.manual_seed(0)
    for spec in args.models:
        name, recipe = spec.split(":")
        shape = (2, 3, args.img_size, args.img_size)
        base = hybridize.create_model(
            name, pretrained=args.pretrained, num_classes=None if args.pretrained else 10
        )
        model = hybridize.convert(base, recipe, example_input=torch.rand(shape))
        for m in model.modules():
            if isinstance(m, FusionBlock):
                with torch.no_grad():
                    m.gate.fill_(1.0)
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.rand(8, *shape[1:]))
        model.eval()
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            report = hybridize.export_onnx(
                model, torch.rand(shape), Path(d) / "m.onnx", max_real=args.max_real
            )
            seconds = time.perf_counter() - t0
        print(
            f"== {name} ({recipe}), {args.img_size}x{args.img_size}, export+check {seconds:.1f} s"
        )
        for line in report.lines()[1:]:
            print("   " + line)


if __name__ == "__main__":
    main()
