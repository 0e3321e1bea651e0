"""Several processes, one job: torchrun's environment, each process's device, and the
share of the work that is its own (training with DDP; ``predict`` and ``evaluate``
sharded by video).

``torchrun --nproc_per_node N -m avrsp <command> …`` sets WORLD_SIZE, RANK, LOCAL_RANK and
LOCAL_WORLD_SIZE. Each process then takes its LOCAL_RANK's GPU when there are GPUs
(one per process, or an error), or shares the CPU cores with the other processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

from .config import ConfigError

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: every ``world``-th item from its rank, so that shares
        differ in size by at most one and their union is ``items``, in order."""
        return list(items[self.rank::self.world])

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: torch.device) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def process_device(name: str) -> torch.device:
    """The device of this process: with several CUDA processes, its LOCAL_RANK's GPU. A
    machine with fewer GPUs than processes is an error: NCCL needs one GPU per process,
    and rank 1 of two on a one-GPU machine would otherwise ask for a cuda:1 that is not
    there. Several CPU processes share the cores: each takes its part of the threads."""
    from .runtime import resolve_device

    device = torch.device(resolve_device(name))
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if max(local_rank, local_world - 1) >= gpus:
            raise ConfigError(f"device: {local_world} processes on this machine but {gpus} GPU(s); run torchrun "
                              f"with --nproc_per_node {gpus} (one GPU per process), or device=cpu")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return device
