"""Deterministic subsets, transformed views and DataLoaders (single process or DDP)."""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from hybridize.data.datasets import DataInfo, open_dataset
from hybridize.data.presets import InputSpec, input_spec
from hybridize.data.transforms import build_transform
from hybridize.errors import DataError


class Transformed(Dataset):
    """A view of ``base`` restricted to ``indices`` with ``transform`` applied to the image."""

    def __init__(
        self, base: Dataset, indices: Sequence[int] | None, transform: Callable | None
    ) -> None:
        self.base, self.transform = base, transform
        self.indices = list(range(len(cast(Sized, base)))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[self.indices[i]]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(y)


def _targets(dataset: Dataset) -> list[int] | None:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    return targets.tolist() if isinstance(targets, torch.Tensor) else list(targets)


def subset_indices(dataset: Dataset, limit: int | None, seed: int) -> list[int] | None:
    """``limit`` indices chosen with a generator seeded by ``seed``, class-balanced when labels
    are known (round robin over classes in a seeded random order). ``None`` keeps all."""
    n = len(cast(Sized, dataset))
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    targets = _targets(dataset)
    if targets is None:
        return sorted(perm[:limit])
    seen: dict[int, int] = {}
    keyed = []
    for pos, i in enumerate(perm):
        k = seen.get(targets[i], 0)
        seen[targets[i]] = k + 1
        keyed.append((k, pos, i))
    keyed.sort()
    return sorted(i for _, _, i in keyed[:limit])


def worker_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a train loader's worker seeds in ``epoch`` on process ``rank``: every rank
    its own, so the processes of a distributed run draw different augmentations. Rank 0 keeps
    the one-process seeds; other ranks hash (seed, epoch, rank) to 32 bits (torch's CPU
    generator reads only the low 32 bits of a seed)."""
    if rank == 0:
        return seed * 1_000_003 + epoch
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """Seed python and numpy in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def default_workers() -> int:
    """Worker processes per loader: one core left for the main process, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(0, min(8, cpus - 1))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_sizes(**values: int | None) -> None:
    """Each value None (the default / no limit) or an integer >= 1; else a one-line DataError."""
    for name, value in values.items():
        if value is not None and (not _is_int(value) or value < 1):
            option = name.replace("_", "-")
            raise DataError(f"{option} {value!r}: give an integer of 1 or more")


@dataclass
class Loaders:
    """The train and eval loaders, the train sampler (call ``set_epoch``) and facts."""

    train: DataLoader
    eval: DataLoader
    sampler: DistributedSampler
    info: DataInfo
    spec: InputSpec

    def start_epoch(self, epoch: int) -> None:
        """Shuffle for ``epoch`` and seed its worker processes (from seed, epoch and rank)."""
        self.sampler.set_epoch(epoch)
        if self.train.generator is not None:
            self.train.generator.manual_seed(
                worker_seed(self.sampler.seed, epoch, self.sampler.rank)
            )


def build_loaders(
    data: str | tuple[Dataset, Dataset],
    model: nn.Module | None = None,
    *,
    batch_size: int = 64,
    eval_batch_size: int | None = None,
    img_size: int | None = None,
    data_root: str | None = None,
    limit_train: int | None = None,
    limit_eval: int | None = None,
    augment: bool = True,
    paper: bool = False,
    workers: int | None = None,
    seed: int = 0,
    world_size: int = 1,
    rank: int = 0,
    pin_memory: bool | None = None,
    download: bool = True,
) -> Loaders:
    """Loaders for data set ``data`` (a name, or a ``(train, eval)`` pair of datasets yielding
    ready tensors), with transforms from ``model``'s timm data config.

    Train order comes from a :class:`DistributedSampler` (also with one process) seeded by
    ``seed``; call ``loaders.start_epoch(epoch)`` each epoch. ``batch_size`` is per process.
    """
    _check_sizes(
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        img_size=img_size,
        limit_train=limit_train,
        limit_eval=limit_eval,
    )
    if workers is not None and (not _is_int(workers) or workers < 0):
        raise DataError(f"workers {workers!r}: give 0 (load in the main process) or more")
    if isinstance(data, str):
        raw, info = open_dataset(data, data_root, download=download)
        spec = input_spec(model, img_size, paper=paper)
        if spec.in_chans not in (1, info.channels) and info.channels != 1:
            raise DataError(  # ExpandChannels maps 1 -> C and C -> 1 only
                f"{data} has {info.channels}-channel images and the model takes {spec.in_chans} "
                f"channels; build the model with in_chans={info.channels} or 1 (--in-chans)"
            )
        small = info.native_size <= 64
        tf_train = build_transform(spec, train=True, augment=augment, small=small, paper=paper)
        tf_eval = build_transform(spec, train=False, small=small, paper=paper)
    else:
        raw = {"train": data[0], "eval": data[1]}
        targets = _targets(data[0]) or [
            int(data[0][i][1]) for i in range(len(cast(Sized, data[0])))
        ]
        info = DataInfo("custom", max(targets) + 1, 0, 0, "in memory")
        spec = input_spec(None, img_size or 0, paper=True)
        tf_train = tf_eval = None
    train_set = Transformed(raw["train"], subset_indices(raw["train"], limit_train, seed), tf_train)
    eval_set = Transformed(raw["eval"], subset_indices(raw["eval"], limit_eval, seed + 1), tf_eval)
    workers = default_workers() if workers is None else workers
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    sampler: DistributedSampler[Any] = DistributedSampler(
        train_set, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    # eval shards without padding, so every sample counts once over all ranks
    eval_sampler = list(range(rank, len(eval_set), world_size)) if world_size > 1 else None
    common: dict[str, Any] = dict(
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=seed_worker,
    )
    g = torch.Generator().manual_seed(worker_seed(seed, 0, rank))
    train = DataLoader(
        train_set, batch_size=batch_size, sampler=sampler, generator=g, drop_last=False, **common
    )
    evl = DataLoader(
        eval_set,
        batch_size=eval_batch_size or batch_size,
        sampler=eval_sampler,
        shuffle=False,
        **common,
    )
    return Loaders(train, evl, sampler, info, spec)


def eval_loader(
    data: str | tuple[Dataset, Dataset],
    model: nn.Module | None = None,
    *,
    limit: int | None = None,
    **options: Any,
) -> DataLoader:
    """The eval split of ``data`` alone (its first ``limit`` images, by the seeded subset rule),
    without augmentation; ``options`` are those of :func:`build_loaders`."""
    loaders = build_loaders(data, model, limit_train=1, limit_eval=limit, augment=False, **options)
    return loaders.eval
