"""Under several processes, rank 0 opens (and may download) a named data set before the others;
a failure there stops every rank, and no other rank touches the data set."""

from __future__ import annotations

import pytest
import torch

from hybridize.errors import DataError
from hybridize.train import TrainError, resolve_config
from hybridize.train import run as run_module
from hybridize.train.distributed import DistEnv


def _env(rank: int) -> DistEnv:
    return DistEnv(world_size=2, rank=rank, local_rank=rank, device=torch.device("cpu"))


def _calls(monkeypatch, *, rank_zero_fails: bool) -> tuple[list[int], list[bool]]:
    opened: list[int] = []
    flags: list[bool] = []

    def open_loaders(data, model, cfg, env, root):
        opened.append(env.rank)
        if env.rank == 0 and rank_zero_fails:
            raise DataError("cannot download fashion-mnist: no network")
        return f"loaders of rank {env.rank}"

    def broadcast_flag(flag: bool, env: DistEnv) -> bool:  # rank 0's outcome reaches all
        flags.append(flag)
        return rank_zero_fails

    monkeypatch.setattr(run_module, "_open_loaders", open_loaders)
    monkeypatch.setattr(run_module, "broadcast_flag", broadcast_flag)
    return opened, flags


def test_rank_zero_opens_the_data_set_first(monkeypatch) -> None:
    opened, flags = _calls(monkeypatch, rank_zero_fails=False)
    cfg = resolve_config()
    assert run_module._build_loaders("fashion-mnist", None, cfg, _env(0), None) == (
        "loaders of rank 0"
    )
    assert run_module._build_loaders("fashion-mnist", None, cfg, _env(1), None) == (
        "loaders of rank 1"
    )
    assert opened == [0, 1] and flags == [False, False]


def test_a_failure_on_rank_zero_stops_every_rank_before_the_others_open_it(monkeypatch):
    opened, flags = _calls(monkeypatch, rank_zero_fails=True)
    cfg = resolve_config()
    with pytest.raises(DataError, match="no network"):  # rank 0: its own error
        run_module._build_loaders("fashion-mnist", None, cfg, _env(0), None)
    with pytest.raises(TrainError, match="rank 0 could not open the data set"):
        run_module._build_loaders("fashion-mnist", None, cfg, _env(1), None)
    assert opened == [0] and flags == [True, False]
