"""Pull near-twin fixed centres apart before training on them (`centre_cap`).

Fixed centres (`teacher_loss: centres`) are a trained model's template embeddings, so they keep
its confusions: two font samples of one text sit almost on one point, and captures learn to
land there, between both. Spreading such pairs down to a cap asks the student to tell them apart.
Pairs above `DUPLICATE` are left together: they are the same page (re-renders, blank pages),
and pulling them apart would ask for a difference that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from docemb.model import l2_normalize

DUPLICATE = 0.995  # cosine above which two templates count as one image


@dataclass(frozen=True)
class Spread:
    """What `spread_centres` did: pairs found between the cap and `DUPLICATE`, and pairs left
    above it (chains of duplicates can make a cap unreachable: a ~ b and b ~ c, a and c apart)."""

    pairs: int
    left: int


def near_pairs(centres: torch.Tensor, low: float, high: float, block: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs i < j of unit rows whose cosine lies in (low, high), in blocks of rows so
    that the full Gram matrix of a large pool is never held."""
    firsts, seconds = [], []
    for start in range(0, len(centres), block):
        scores = centres[start : start + block] @ centres.T
        rows, cols = torch.nonzero((scores > low) & (scores < high), as_tuple=True)
        rows = rows + start
        keep = rows < cols
        firsts.append(rows[keep])
        seconds.append(cols[keep])
    return torch.cat(firsts), torch.cat(seconds)


def spread_centres(
    centres: torch.Tensor, cap: float, rounds: int = 5, steps: int = 40, lr: float = 0.5
) -> tuple[torch.Tensor, Spread]:
    """Unit centres with every pair between `cap` and `DUPLICATE` pushed down to about `cap`:
    projected gradient descent on the squared excess of those pairs' cosines over the cap. Each
    row's push is averaged over its pairs, so a centre among many look-alikes moves no faster
    than one with a single twin. Pairs are found again each round, since a pushed centre can
    come near another; duplicates share their neighbours and move together."""
    x = l2_normalize(centres.float())
    first, second = near_pairs(x, cap, DUPLICATE)
    found = len(first)
    for _ in range(rounds):
        if not len(first):
            break
        for _ in range(steps):
            excess = ((x[first] * x[second]).sum(1) - cap).clamp(min=0)
            push, count = torch.zeros_like(x), torch.zeros(len(x), device=x.device)
            push.index_add_(0, first, excess[:, None] * x[second]).index_add_(0, second, excess[:, None] * x[first])
            count.index_add_(0, first, (excess > 0).float()).index_add_(0, second, (excess > 0).float())
            x = l2_normalize(x - lr * push / count.clamp(min=1)[:, None])
        first, second = near_pairs(x, cap + 1e-3, DUPLICATE)
    return x, Spread(found, len(first))
