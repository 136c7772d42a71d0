"""Train loader worker seeds: a function of (seed, epoch, rank), different on every rank."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from hybridize.data import build_loaders


class _WorkerSeeds(Dataset):
    """Item i is (the worker's torch seed as a tensor, label i % 2): what a random transform
    in that worker would draw from."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(torch.initial_seed() % 2**24)]), i % 2


def _first_batch_seeds(rank: int, epoch: int, seed: int = 0) -> list[float]:
    data = (_WorkerSeeds(), _WorkerSeeds())
    loaders = build_loaders(data, batch_size=4, workers=1, seed=seed, world_size=2, rank=rank)
    loaders.start_epoch(epoch)
    x, _ = next(iter(loaders.train))
    return x.flatten().tolist()


def test_worker_seeds_differ_between_ranks_and_epochs_and_repeat_exactly():
    rank0, rank1 = _first_batch_seeds(0, 0), _first_batch_seeds(1, 0)
    assert rank0 != rank1  # the same seed on every rank gave every rank the same augmentation
    assert _first_batch_seeds(0, 1) != rank0
    assert _first_batch_seeds(1, 0) == rank1  # reproducible: a function of (seed, epoch, rank)
