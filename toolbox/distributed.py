"""Several processes under ``torchrun``: the process group, which process this is, and the few collectives the
commander and the trainer use. Without torchrun every function answers as the only process would, so one code
path serves both (nanoGPT's ``ddp = int(os.environ.get('RANK', -1)) != -1``)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among those torchrun started (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world > 1


ALONE = Processes()  # one process, no torchrun


def launched() -> Processes:
    """What torchrun's environment says (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return ALONE
    return Processes(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def start(procs: Processes, cuda: bool) -> None:
    """Join the process group: NCCL between GPUs, gloo on CPUs (nothing to do for one process)."""
    if not procs.several or dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(procs.local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the process group this process is in; (0, 1) alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` alone)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, obj)
    return out


def share(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def same_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) in every process: DDP shares them before each training
    forward, but each process's last step updates its own, and evaluation must use one model everywhere."""
    if world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def all_finite(value: float) -> bool:
    """Whether ``value`` is finite in every process (so that all stop together, before a collective)."""
    if world()[1] == 1:
        return math.isfinite(value)
    flag = torch.tensor([0.0 if math.isfinite(value) else 1.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return bool(flag.item() == 0)
