"""Several processes: `finetune --devices K` relaunches the command it was given under torchrun,
and each process takes its own GPU."""

from __future__ import annotations

import sys

import pytest

from hybridize_cli.commands import finetune
from hybridize_cli.main import main_entry


class _Exec(Exception):
    """Stands in for os.execv, which never returns."""


def test_devices_relaunches_the_given_command_line(monkeypatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def execv(path: str, cmd: list[str]) -> None:
        calls.append((path, cmd))
        raise _Exec

    monkeypatch.setattr(finetune.os, "execv", execv)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["pytest", "--unrelated"])  # not what is relaunched
    argv = ["--debug", "finetune", "m.safetensors", "--devices", "2", "--epochs", "1"]
    with pytest.raises(_Exec):
        main_entry(argv)
    ((path, cmd),) = calls
    assert path == sys.executable and cmd[:2] == [sys.executable, "-m"]
    assert "--nproc_per_node=2" in cmd and "torch.distributed.run" in cmd
    relaunched = cmd[cmd.index("hybridize_cli") + 1 :]
    assert relaunched == ["--debug", "finetune", "m.safetensors", "--epochs", "1"]


def test_cuda_device_under_torchrun_is_the_local_rank_gpu(monkeypatch) -> None:
    import pytest
    import torch

    from hybridize.errors import TrainError
    from hybridize.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1, world_size=4) == torch.device("cuda", 1)
    with pytest.raises(TrainError, match="process 3 on this machine has no GPU of its own"):
        resolve_device("cuda", local_rank=3, world_size=4)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(TrainError, match="at most 2 processes per machine"):
        resolve_device(None, local_rank=2, world_size=3)
    # one visible GPU per process (CUDA_VISIBLE_DEVICES set per rank by the launcher)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda", local_rank=3, world_size=4) == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=0, world_size=1) == torch.device("cuda")
    assert resolve_device("cuda:1", local_rank=0, world_size=1) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")
    with pytest.raises(TrainError, match="--device cuda:0: with 2 processes"):
        resolve_device("cuda:0", local_rank=1, world_size=2)
