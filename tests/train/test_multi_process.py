"""Several processes: `finetune --devices K` relaunches the command it was given under torchrun,
and each process takes its own GPU."""

from __future__ import annotations

import sys

from hybridize_cli.commands import finetune
from hybridize_cli.main import main_entry


def test_devices_relaunches_the_given_command_line(monkeypatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(finetune.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "--unrelated"])  # not what is relaunched
    argv = ["--debug", "finetune", "m.safetensors", "--devices", "2", "--epochs", "1"]
    assert main_entry(argv) == 0
    (cmd,) = calls
    assert cmd[:2] == [sys.executable, "-m"] and "--nproc_per_node=2" in cmd
    relaunched = cmd[cmd.index("hybridize_cli") + 1 :]
    assert relaunched == ["--debug", "finetune", "m.safetensors", "--epochs", "1"]


def test_relaunch_exit_code_of_a_killed_worker(monkeypatch) -> None:
    monkeypatch.setattr(finetune.subprocess, "call", lambda cmd: -9)  # killed by SIGKILL
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main_entry(["finetune", "m.safetensors", "--devices=3"]) == 128 - -9


def test_cuda_device_under_torchrun_is_the_local_rank_gpu(monkeypatch) -> None:
    import pytest
    import torch

    from hybridize.errors import TrainError
    from hybridize.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=3, world_size=4) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=0, world_size=1) == torch.device("cuda")
    assert resolve_device("cuda:1", local_rank=0, world_size=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")
    with pytest.raises(TrainError, match="--device cuda:0: with 2 processes"):
        resolve_device("cuda:0", local_rank=1, world_size=2)
