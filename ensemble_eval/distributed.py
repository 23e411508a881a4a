"""torchrun world info, sharding without padding or duplicates, gathering on rank 0.

Under `torchrun --nproc_per_node=N -m ensemble_eval ...` (or the console script under
torchrun) every process evaluates its own share of the batches: the batches still to do are
dealt round-robin, so each image is evaluated exactly once, by one process, in the same
batch as a single-process run. Each round, every process sends its finished batches to
rank 0, which alone writes progress and results. Without torchrun's environment, the world
is one process and nothing here touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads the world before importing it
    import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """The process's place in a torchrun job (RANK, WORLD_SIZE, LOCAL_RANK), or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); the device this process uses."""
    if not world.distributed:
        return device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def shard(items: list, world: World) -> list:
    """This process's share of `items`: every world_size-th one, no padding, no duplicates."""
    return items[world.rank :: world.world_size]


def gather_to_main(obj, world: World) -> list | None:
    """Every process's `obj` on rank 0 (in rank order); None elsewhere."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(values: list[int], world: World, device: torch.device) -> list[int]:
    """The element-wise sum of every process's `values` (small integer vectors), on every process."""
    if not world.distributed:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_from_main(obj, world: World):
    """Rank 0's `obj` on every process."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def finish(world: World) -> None:
    if world.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
