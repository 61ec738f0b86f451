"""Helpers that share work between torchrun's ranks, on 2 CPU processes (gloo)."""

import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from docemb.train.distributed import computed_on_main

WORLD = 2


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        calls = []

        def work() -> tuple[torch.Tensor, int]:
            calls.append(rank)
            return torch.full((3, 2), float(rank + 7)), rank

        tensor, origin = computed_on_main(work, rank == 0)
        torch.save({"tensor": tensor, "origin": origin, "calls": len(calls)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_computed_on_main_runs_once_and_every_rank_gets_its_result(tmp_path, free_port):
    mp.spawn(worker, args=(free_port, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["calls"] for r in ranks] == [1, 0]
    for r in ranks:
        assert r["origin"] == 0
        assert torch.equal(r["tensor"], torch.full((3, 2), 7.0))


def test_computed_on_main_without_a_process_group_just_runs():
    assert computed_on_main(lambda: 41 + 1, is_main=True) == 42
