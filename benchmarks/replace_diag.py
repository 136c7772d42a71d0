"""Diagnosis of pure spiking blocks (mode replace) on the reproduce.py budget (issue 9).

Builds the ResNet-b32 of ``benchmarks/reproduce.py`` with every region replaced by its spiking
branch (fresh twins), from the old row's recipe (``has8`` defaults, mode replace) or the
``replace-blocks`` defaults, optionally with recipe keys overridden. It then

1. runs one train-mode backward on a fixed Fashion-MNIST batch (64 images, 32 px) and prints
   the norm of the gradient reaching each twin's weights;
2. trains ``--steps`` Adam steps (lr 1e-3, wd 1e-3, batch 64) and prints, per LIF and per
   branch output (the decoder), the mean output in train mode and in eval mode on 256 held-out
   training images, with the eval top-1 on them.

    nice -n 10 .venv/bin/python benchmarks/replace_diag.py --recipe has8-replace \\
        --set '{"encoder": {"gain": "unit"}}' --steps 12
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reproduce  # noqa: E402


def recipe(name: str, overrides: dict[str, Any]) -> dict:
    """``has8-replace`` (the old row) or ``replace-blocks`` (fresh twins), keys overridden;
    mapping values (encoder, neuron, decoder) are merged key by key."""
    data = reproduce._replace_dict() if name == "has8-replace" else reproduce._replace_blocks_dict()
    for key, value in overrides.items():
        if isinstance(value, dict):
            data["defaults"][key] = {**(data["defaults"].get(key) or {}), **value}
        else:
            data["defaults"][key] = value
    return data


def fmnist(n: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    from hybridize.data import read_idx

    x = read_idx(reproduce.FMNIST / "train-images-idx3-ubyte.gz")[offset : offset + n]
    x = x.float().div(255.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear").clamp(0, 1)
    y = read_idx(reproduce.FMNIST / "train-labels-idx1-ubyte.gz")[offset : offset + n].long()
    return x, y


def means(model: torch.nn.Module, x: torch.Tensor, train: bool) -> tuple[dict, torch.Tensor]:
    """Mean output of every LIF and spiking branch on ``x`` (train or eval mode, no grad)."""
    from hybridize.spiking import LIF, SpikingBranch

    model = copy.deepcopy(model).train(train)  # train-mode passes must not move running stats
    out: dict[str, float] = {}
    for n, m in model.named_modules():
        if isinstance(m, (LIF, SpikingBranch)):
            m.register_forward_hook(
                lambda _m, _i, o, n=n: out.__setitem__(n, o.float().mean().item())
            )
    with torch.no_grad():
        logits = model(x)
    return out, logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", choices=("has8-replace", "replace-blocks"), default="replace-blocks")
    p.add_argument("--set", default="{}", help="JSON of recipe default keys to override")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hybridize.models import create

    torch.manual_seed(args.seed)
    model = create("has8_resnet_b32", num_classes=10, in_chans=1,
                   recipe=recipe(args.recipe, json.loads(args.set)))  # fmt: skip
    x, y = fmnist(64 * max(1, args.steps))
    xe, ye = fmnist(256, offset=len(x))
    model.train()
    torch.nn.functional.cross_entropy(model(x[:64]), y[:64]).backward()
    print("gradient norm reaching the twins' weights (one backward, before training):")
    for name, prm in model.named_parameters():
        if prm.grad is not None and prm.ndim > 1:
            print(f"  {name:40s} {prm.grad.norm().item():.3e}")
    model.zero_grad(set_to_none=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-3)
    loss = torch.tensor(float("nan"))
    for step in range(args.steps):
        loss = torch.nn.functional.cross_entropy(
            model(x[64 * step : 64 * step + 64]), y[64 * step : 64 * step + 64]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"after {args.steps} steps (last train loss {loss.item():.3f}):")
    train_means, _ = means(model, xe, True)
    eval_means, logits = means(model, xe, False)
    print(f"  {'module':32s} {'mean out (train)':>17s} {'mean out (eval)':>16s}")
    for name, value in train_means.items():
        print(f"  {name:32s} {value:17.4f} {eval_means[name]:16.4f}")
    top1 = (logits.argmax(1) == ye).float().mean().item()
    print(f"  eval top-1 on 256 held-out training images: {100 * top1:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
