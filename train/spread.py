"""Pull near-twin fixed centres apart before training on them (`centre_cap`).

Fixed centres (`teacher_loss: centres`) are a trained model's template embeddings, so they keep
its confusions: two font samples of one text sit almost on one point, and captures learn to
land there, between both. Spreading such pairs down to a cap asks the student to tell them apart.
Pairs above `DUPLICATE` are left together: they are the same page (re-renders, blank pages),
and pulling them apart would ask for a difference that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from docemb.dedup_cli import duplicate_groups as linked_groups
from docemb.model import l2_normalize

DUPLICATE = 0.995  # cosine above which two templates count as one image


@dataclass(frozen=True)
class Spread:
    """What `spread_centres` did: groups of duplicates (one image), the pairs of groups found
    between the cap and `DUPLICATE` at the start, and the pairs still above the cap at the end."""

    groups: int
    pairs: int
    left: int


def near_pairs(centres: torch.Tensor, low: float, high: float, block: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs i < j of unit rows whose cosine lies in (low, high), in blocks of rows so
    that the full Gram matrix of a large pool is never held."""
    firsts, seconds = [], []
    for start in range(0, len(centres), block):
        scores = centres[start : start + block] @ centres[start:].T
        rows, cols = torch.nonzero((scores > low) & (scores < high), as_tuple=True)
        keep = rows < cols
        firsts.append(rows[keep] + start)
        seconds.append(cols[keep] + start)
    return torch.cat(firsts), torch.cat(seconds)


def duplicate_groups(centres: torch.Tensor) -> torch.Tensor:
    """Each unit row's group, 0..G-1: rows joined by chains of cosines above `DUPLICATE`, as
    `docemb dedup` joins a collection's near-copies."""
    first, second = near_pairs(centres, DUPLICATE, 2.0)
    links = np.ones((len(first), 1)), second[:, None].cpu().numpy(), first.cpu().numpy()
    group = torch.arange(len(centres), device=centres.device)
    for members in linked_groups(*links, threshold=0.0):
        group[members] = members[0]
    return torch.unique(group, return_inverse=True)[1]


def spread_centres(centres: torch.Tensor, cap: float) -> tuple[torch.Tensor, Spread]:
    """Unit centres with every pair of look-alikes, between `cap` and `DUPLICATE`, pushed down
    to about `cap`. Duplicates are grouped first and move as one: their mean is pushed, and
    every member shifts with it, so that one image never becomes two."""
    x = l2_normalize(centres.float())
    group = duplicate_groups(x)
    means = l2_normalize(x.new_zeros(int(group.max()) + 1, x.shape[1]).index_add_(0, group, x))
    spread, pairs, left = _push_apart(means, cap)
    return l2_normalize(x + (spread - means)[group]), Spread(len(means), pairs, left)


def _push_apart(x: torch.Tensor, cap: float, rounds: int = 5, steps: int = 40, lr: float = 0.25) -> tuple[torch.Tensor, int, int]:
    """Projected gradient descent on the squared excess over `cap` of the pairs' cosines; each
    row's push is averaged over its pairs, so that a row among many look-alikes moves no faster
    than one with a single twin. Pairs are found again each round, since a pushed row can come
    near another. The rows, and the pairs found at the start and left at the end."""
    first, second = near_pairs(x, cap, DUPLICATE)
    found = len(first)
    for _ in range(rounds):
        if not len(first):
            break
        for _ in range(steps):
            excess = ((x[first] * x[second]).sum(1) - cap).clamp(min=0)
            push, count = torch.zeros_like(x), x.new_zeros(len(x))
            push.index_add_(0, first, excess[:, None] * x[second]).index_add_(0, second, excess[:, None] * x[first])
            count.index_add_(0, first, (excess > 0).float()).index_add_(0, second, (excess > 0).float())
            x = l2_normalize(x - lr * push / count.clamp(min=1)[:, None])
        first, second = near_pairs(x, cap + 1e-3, DUPLICATE)
    return x, found, len(first)
