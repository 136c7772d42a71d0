"""Two gloo processes on the CPU equal one process over the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from hybridize.train import finetune, read_metrics

from .conftest import make_data, make_plain

OPTS = dict(
    epochs=2, batch_size=8, workers=0, progress=False, lr=0.05, optimizer="sgd", device="cpu"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
        RANK=str(rank), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    finetune(make_plain(), make_data(), out=out, **OPTS)


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    single = finetune(make_plain(), make_data(), out=tmp_path / "one", **OPTS)
    ctx = mp.get_context("fork")  # the test module need not be importable in a child
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path / "two"))) for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    ddp = load_file(tmp_path / "two" / "last.safetensors")  # written by rank 0 only
    ref = single.model.state_dict()
    assert ddp.keys() == ref.keys()
    moved = 0.0
    for k in ref:
        torch.testing.assert_close(ddp[k], ref[k], atol=1e-5, rtol=1e-4)
        moved += (ref[k] - make_plain().state_dict()[k]).abs().sum().item()
    assert moved > 0  # training changed the weights, so the match means something
    metrics = read_metrics(tmp_path / "two")
    assert len(metrics) == 2  # one writer
    # sums over both ranks: every training sample once per epoch, every eval sample once
    assert metrics[-1]["train_samples"] == 48 and metrics[-1]["eval_samples"] == 24
    assert metrics[-1]["eval_top1"] == single.history[-1]["eval_top1"]
