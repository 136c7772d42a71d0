"""Lean exploration loop for pure spiking blocks (issue 9; docs/results.md, "Pure spiking blocks").

The reproduce.py budget without its harness: the HAS-8 ResNet-b32 (1 channel, 32 px) from a
recipe whose default keys are overridden by JSON (``"_base": "replace"`` starts from the old
row, ``has8`` + mode replace; mapping values are merged key by key), 32 Adam steps (lr 1e-3,
wd 1e-3, batch 64, random flips) on a seeded 2048-image training subset, then top-1 in eval
mode on the first 1000 test images; one thread. Prints the train loss, batch accuracy, largest
gradient and mean LIF output every 16 steps, then one JSON line.

    nice -n 10 .venv/bin/python benchmarks/replace_explore.py 0 \\
        '{"_base": "replace", "encoder": {"gain": "unit"}, "bn_momentum": 0.5}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reproduce  # noqa: E402


def build(seed: int, over: dict) -> torch.nn.Module:
    from hybridize.models import create
    from hybridize.recipe import load_recipe

    base = over.pop("_base", "has8")
    rec = reproduce._replace_dict() if base == "replace" else load_recipe(base).to_dict()
    for key, value in over.items():
        if isinstance(value, dict):
            rec["defaults"][key] = {**(rec["defaults"].get(key) or {}), **value}
        else:
            rec["defaults"][key] = value
    torch.manual_seed(seed)
    return create("has8_resnet_b32", num_classes=10, in_chans=1, recipe=rec)


def load(split: str, n: int, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of a split at 32 px in [0, 1]: a seeded random subset, or the first n."""
    from hybridize.data import read_idx

    x = read_idx(reproduce.FMNIST / f"{split}-images-idx3-ubyte.gz").float().div(255).unsqueeze(1)
    y = read_idx(reproduce.FMNIST / f"{split}-labels-idx1-ubyte.gz").long()
    idx = torch.randperm(len(y), generator=gen)[:n] if gen is not None else torch.arange(n)
    x = torch.nn.functional.interpolate(x[idx], size=(32, 32), mode="bilinear").clamp(0, 1)
    return x, y[idx]


def main(argv: list[str] | None = None) -> int:
    from hybridize.spiking import LIF

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("seed", type=int)
    ap.add_argument("over", help="JSON of recipe default keys to override")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default=None, help="append the JSON line to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = build(args.seed, json.loads(args.over))
    gen = torch.Generator().manual_seed(args.seed)
    xt, yt = load("train", 2048, gen)
    xe, ye = load("t10k", 1000, None)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-3)
    fired: list[float] = []
    for m in model.modules():
        if isinstance(m, LIF):
            m.register_forward_hook(
                lambda _m, _i, o: fired.append(o.detach().float().mean().item())
            )
    t0 = time.time()
    model.train()
    for s in range(args.steps):
        xb, yb = xt[s * 64 : (s + 1) * 64], yt[s * 64 : (s + 1) * 64]
        flip = torch.rand(64, generator=gen) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        fired.clear()
        out = model(xb)
        loss = torch.nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        gmax = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
        opt.step()
        if s % 16 == 0 or s == args.steps - 1:
            acc = (out.argmax(1) == yb).float().mean().item()
            fire = sum(fired) / len(fired) if fired else float("nan")
            print(f"step {s} loss {loss.item():.3f} acc {acc:.2f} gmax {gmax:.2e} fire {fire:.3f}")
    model.eval()
    fired.clear()
    with torch.no_grad():
        out = torch.cat([model(xe[i : i + 250]) for i in range(0, len(xe), 250)])
    record = {
        "over": args.over,
        "seed": args.seed,
        "lr": args.lr,
        "eval_top1": (out.argmax(1) == ye).float().mean().item(),
        "eval_fire": sum(fired) / len(fired) if fired else 0.0,
        "s": round(time.time() - t0),
    }
    print(json.dumps(record), flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
