"""Sharded PartialFC on 2 CPU processes (gloo) against one process on the same global batch."""

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from docemb.train.margins import build_margin
from docemb.train.partial_fc import PartialFC, shard_range

NUM_CLASSES, DIM, FEATURES, BATCH, WORLD = 37, 8, 5, 12, 2


def problem(margin: str):
    """The same model, centres, inputs and labels in every process."""
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, DIM)
    weight = torch.randn(NUM_CLASSES, DIM)
    inputs = torch.randn(BATCH, FEATURES)
    labels = torch.tensor([0, 3, 3, 17, 18, 19, 36, 35, 5, 20, 20, 1])
    return model, weight, inputs, labels, build_margin(margin, 16.0, 0.3)


def worker(rank: int, port: int, margin: str, sample_rate: float, imprint: bool, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        torch.save(one_step(rank, margin, sample_rate, imprint), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # DDP and its reducer are gone on every rank before the group is torn down
    finally:
        dist.destroy_process_group()


def one_step(rank: int, margin: str, sample_rate: float, imprint: bool) -> dict[str, torch.Tensor]:
    model, weight, inputs, labels, margin_module = problem(margin)
    ddp = DistributedDataParallel(model)
    pfc = PartialFC(NUM_CLASSES, DIM, margin_module, sample_rate, imprint=imprint)
    start, count = shard_range(NUM_CLASSES, rank, WORLD)
    pfc.weight.data.copy_(weight[start : start + count])
    sampled = []
    sample = pfc.sample
    pfc.sample = lambda lab: sampled.append(sample(lab)) or sampled[-1]  # record the draw
    torch.manual_seed(100 + rank)  # ranks draw their samples independently
    local = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    loss = pfc(ddp(inputs[local]), labels[local])
    loss.backward()
    return {
        "loss": loss.detach(),
        "model_grad": model.weight.grad,
        "model_bias_grad": model.bias.grad,
        "centre_grad": pfc.centre_grad(),
        "centres": pfc.weight.detach(),
        "sampled": sampled[0][0] + start,
    }


@pytest.mark.parametrize("margin,sample_rate,imprint", [("cosface", 1.0, False), ("arcface", 1.0, True), ("cosface", 0.4, True)])
def test_two_gloo_ranks_match_one_process(tmp_path, free_port, margin, sample_rate, imprint):
    mp.spawn(worker, args=(free_port, margin, sample_rate, imprint, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    model, weight, inputs, labels, margin_module = problem(margin)
    pfc = PartialFC(NUM_CLASSES, DIM, margin_module, 1.0)
    pfc.weight.data.copy_(weight)
    union = torch.cat([r["sampled"] for r in ranks])  # ranks' shards are disjoint and in order
    assert set(labels.tolist()) <= set(union.tolist())
    embeddings = model(inputs)
    if imprint:  # each rank imprints its own shard from the gathered batch
        pfc.imprint(embeddings.detach(), labels)
    loss = pfc.sampled_loss(embeddings, union, torch.searchsorted(union, labels))
    loss.backward()

    for r in ranks:
        assert torch.allclose(r["loss"], loss, atol=1e-5)
        assert torch.allclose(r["model_grad"], model.weight.grad, atol=1e-5)
        assert torch.allclose(r["model_bias_grad"], model.bias.grad, atol=1e-5)
    assert torch.allclose(torch.cat([r["centres"] for r in ranks]), pfc.weight.detach(), atol=1e-6)
    centre_grad = torch.cat([r["centre_grad"] for r in ranks])
    assert torch.allclose(centre_grad, pfc.centre_grad(), atol=1e-5)
    unsampled = torch.ones(NUM_CLASSES, dtype=torch.bool)
    unsampled[union] = False
    assert torch.all(centre_grad[unsampled] == 0)
