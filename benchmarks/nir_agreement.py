"""NIR export agreement: every twin of a hybrid exported (or listed with its reason), each file
read back with ``nir.read`` and re-run in snnTorch on the same bit planes, spikes compared.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/nir_agreement.py

Models: has8 resnet18 (random weights; BN statistics, as a cumulative average, and encoder
ranges calibrated by three train-mode passes) and has8-finetune tf_efficientnet_lite0 (ImageNet weights when the offline
package has them, else random; only the encoder ranges calibrated, so the copied twins keep the
pretrained BN). Inputs: ``--random`` uniform images plus up to ``--real`` foolbox ImageNet
samples, at ``--img-size`` pixels.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import hybridize
from hybridize.data.samples import sample_images
from hybridize.spiking import BitPlaneEncoder

MODELS = [("resnet18", "has8"), ("tf_efficientnet_lite0", "has8-finetune")]


def _build(name: str, recipe: str, size: int, pretrained: bool) -> tuple[torch.nn.Module, str]:
    weights = "random"
    base = None
    if pretrained:
        try:
            base = hybridize.create_model(name, pretrained=True)
            weights = "pretrained"
        except hybridize.HybridizeError:
            base = None
    if base is None:
        base = hybridize.create_model(name, pretrained=False)
    model = hybridize.convert(base, recipe, torch.rand(1, 3, size, size))
    bns = {
        m: m.momentum
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    }
    with torch.no_grad():
        if weights == "random":  # BN statistics and encoder ranges of plausible inputs
            model.train()
            for m in bns:  # cumulative average: the statistics of the calibration batches
                m.reset_running_stats()
                m.momentum = None
        else:  # keep the pretrained BN; calibrate only the encoders' running ranges
            model.eval()
            for m in model.modules():
                if isinstance(m, BitPlaneEncoder):
                    m.train()
        for _ in range(3):
            model(torch.rand(8, 3, size, size))
    for m, momentum in bns.items():
        m.momentum = momentum
    return model.eval(), weights


def _inputs(size: int, n_random: int, n_real: int) -> tuple[torch.Tensor, str]:
    torch.manual_seed(0)
    parts, what = [torch.rand(n_random, 3, size, size)], f"{n_random} random"
    found = sample_images(3, (size, size), limit=n_real) if n_real else None
    if found is not None:
        parts.append(found[0])
        what += f" + {found[0].shape[0]} real"
    return torch.cat(parts), what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--random", type=int, default=2)
    parser.add_argument("--real", type=int, default=4)
    parser.add_argument("--no-pretrained", action="store_true")
    parser.add_argument(
        "--models", default=",".join(f"{n}:{r}" for n, r in MODELS), help="NAME:RECIPE,..."
    )
    args = parser.parse_args()
    models = [tuple(item.split(":", 1)) for item in args.models.split(",") if item]
    x, what = _inputs(args.img_size, args.random, args.real)
    print(f"inputs: {what} images at {args.img_size}x{args.img_size}")
    for name, recipe in models:
        start = time.time()
        model, weights = _build(name, recipe, args.img_size, not args.no_pretrained)
        with tempfile.TemporaryDirectory() as tmp:
            result = hybridize.export_nir(model, f"{tmp}/out", x, onnx=False, verify=True)
        compared = differing = fired = 0
        print(f"\n{name} ({recipe}, {weights} weights):")
        for row in result.manifest["regions"]:
            if row["status"] != "exported":
                print(f"  {row['region']}: NOT EXPORTED: {row['reason']}")
                continue
            v = row["verification"]
            compared += v["spikes_compared"]
            differing += v["spikes_differing"]
            fired += v["spikes_fired"]
            print(
                f"  {row['region']}: {v['spikes_compared'] - v['spikes_differing']} of "
                f"{v['spikes_compared']} equal ({v['spikes_fired']} spikes), max |d out| "
                f"{v['output_max_abs_diff']:.3g}"
            )
        n = len(result.manifest["regions"])
        share = 1 - differing / compared if compared else float("nan")
        print(
            f"  => {len(result.exported)} of {n} twins exported; {compared - differing} of "
            f"{compared} spike values equal ({share:.6%}), {differing} differ, {fired} spikes "
            f"fired; {time.time() - start:.0f} s"
        )


if __name__ == "__main__":
    main()
