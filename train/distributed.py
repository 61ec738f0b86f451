"""Process-group set-up for one CPU, one GPU, or many GPUs/hosts under `torchrun`.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process and no
process group is created.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from docemb.errors import DocembError

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Runtime:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs) and pick the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise DocembError("--device cuda was asked for, but torch sees no CUDA device")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Runtime(rank=dist.get_rank() if world_size > 1 else 0, world_size=world_size, device=chosen)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main_rank_first(work: Callable[[], T], is_main: bool) -> T:
    """Run `work` on rank 0, then on the other ranks: rank 0 writes what they then only read
    (generated data, feature caches), so no two ranks write the same files."""
    if is_main:
        result = work()
    barrier()
    if not is_main:
        result = work()
    return result


def computed_on_main(work: Callable[[], T], is_main: bool) -> T:
    """Run `work` on rank 0 only and hand its result to every rank: for slow work whose result
    every rank needs and no file holds."""
    if not (dist.is_available() and dist.is_initialized()):
        return work()
    box = [work() if is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
