"""Process-group setup for torchrun (NCCL on GPUs, gloo on CPU) and small collectives."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hybridize.errors import TrainError


@dataclass(frozen=True)
class DistEnv:
    """This process's place: world size, rank, local rank and device."""

    world_size: int
    rank: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(
    device: str | torch.device | None, local_rank: int = 0, world_size: int = 1
) -> torch.device:
    """``None``/"auto": the local GPU when there is one, else the CPU. ``cuda`` is this
    process's GPU (by local rank); with several processes a GPU index is refused, since every
    process would take the same GPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return _local_gpu(local_rank)
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type != "cuda" or world_size == 1:
        return dev
    if dev.index is not None:
        raise TrainError(
            f"--device {dev}: with {world_size} processes each takes its own GPU by local rank; "
            "give --device cuda (or leave it out)"
        )
    return _local_gpu(local_rank)


def _local_gpu(local_rank: int) -> torch.device:
    """The GPU of the process with ``local_rank`` on this machine: with one visible GPU that
    one (a launcher that shows each process its own through CUDA_VISIBLE_DEVICES; two
    processes sharing a machine's only GPU are not told apart from that); with several, one
    line when there are fewer than processes (NCCL would fail later as an internal error)."""
    count = torch.cuda.device_count()
    if count == 1:  # a launcher that shows each process its own GPU (CUDA_VISIBLE_DEVICES)
        return torch.device("cuda", 0)
    if count and local_rank >= count:
        raise TrainError(
            f"process {local_rank} on this machine has no GPU of its own (the machine has "
            f"{count}); start at most {count} processes per machine (--devices {count})"
        )
    return torch.device("cuda", local_rank)


def setup(device: str | torch.device | None = None) -> DistEnv:
    """Join the process group that torchrun describes in the environment (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local, world)
    owns = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        owns = True
    if dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return DistEnv(world, rank, local, dev, owns)


def teardown(env: DistEnv) -> None:
    """Leave the process group if :func:`setup` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a short list of numbers over all processes."""
    if not env.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flags: list[bool], env: DistEnv) -> list[bool]:
    """Each flag true on every rank if it is true on any rank (one collective for all)."""
    if not env.distributed:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def sync_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """Rank 0's buffers (norm running statistics, encoder ranges) on every rank. DDP broadcasts
    them at the start of each training forward, so after the last step each rank holds its
    own update; evaluation and the checkpoint (rank 0's) then agree."""
    if not env.distributed:
        return
    by_kind: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for buffer in model.buffers():
        by_kind.setdefault((buffer.dtype, buffer.device), []).append(buffer)
    for buffers in by_kind.values():  # one collective per dtype, contiguous whatever the layout
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        with torch.no_grad():
            for b, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
                b.copy_(value.view(b.shape))


def broadcast_flag(flag: bool, env: DistEnv) -> bool:
    """True on every rank if it is true on any rank (stop together)."""
    return any_rank([flag], env)[0]


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch on ``device`` (non-blocking); 4-D images channels-last when asked."""
    if channels_last and x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=torch.channels_last)
    return x.to(device, non_blocking=True)
