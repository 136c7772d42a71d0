"""Two gloo processes on the CPU equal one process over the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from hybridize.train import finetune, read_metrics

from .conftest import make_data, make_hybrid, make_plain

OPTS = dict(
    epochs=2, batch_size=8, workers=0, progress=False, lr=0.05, optimizer="sgd", device="cpu"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(out: Path, options: dict) -> list[int]:
    """Two gloo ranks of ddp_worker.py; their exit codes (a rank still running after two
    minutes is killed and counts as -9)."""
    # fresh interpreters, not fork: forking a process that already ran autograd is unsafe
    port = str(_free_port())
    worker = Path(__file__).with_name("ddp_worker.py")
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(r), "2", port, str(out), json.dumps(options)]
        )
        for r in range(2)
    ]
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=120))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    single = finetune(make_plain(), make_data(), out=tmp_path / "one", **OPTS)
    assert _run_two_ranks(tmp_path / "two", OPTS) == [0, 0]
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


def test_an_empty_eval_shard_with_norm_buffers_does_not_hang(tmp_path: Path) -> None:
    """One eval image over 2 ranks: rank 1 evaluates nothing. Through the DDP wrapper the
    first eval forward broadcasts the BatchNorm buffers, which rank 1 never joins (a hang, or
    sums mismatched with that broadcast); evaluation calls the module itself."""
    options = {**OPTS, "epochs": 1, "_model": "hybrid", "_n": 2}
    assert _run_two_ranks(tmp_path, options) == [0, 0]
    (record,) = read_metrics(tmp_path)
    assert record["eval_samples"] == 1 and record["train_samples"] == 2


def test_evaluation_uses_the_buffers_of_the_checkpoint(tmp_path: Path) -> None:
    """After the last step each rank holds its own BatchNorm update (DDP broadcasts buffers
    only at the start of a forward): rank 1 evaluated its shard with statistics the saved
    model does not have. The eval loss now equals the saved model's, evaluated alone."""
    from hybridize.train import evaluate

    options = {**OPTS, "epochs": 1, "_model": "hybrid"}
    assert _run_two_ranks(tmp_path, options) == [0, 0]
    (record,) = read_metrics(tmp_path)
    saved = make_hybrid()
    saved.load_state_dict(load_file(tmp_path / "last.safetensors"))
    alone = evaluate(saved, make_data(), device="cpu", workers=0)
    assert alone["eval_samples"] == record["eval_samples"] == 24
    assert abs(alone["eval_loss"] - record["eval_loss"]) <= 1e-6 * abs(alone["eval_loss"])
