"""Additive margins on cosine logits: CosFace, ArcFace and the combined form cos(m1*t + m2) - m3.

The margin is applied to the target class only; the result is scaled by s before softmax. A
target of -1 marks a row whose class is held by another rank (sharded PartialFC): it gets no margin.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CombinedMargin(nn.Module):
    """m1 = 1, m2 = 0, m3 > 0 is CosFace; m1 = 1, m2 > 0, m3 = 0 is ArcFace."""

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.0, m3: float = 0.0) -> None:
        super().__init__()
        self.s, self.m1, self.m2, self.m3 = s, m1, m2, m3
        # beyond theta = pi - m2, cos(theta + m2) would rise again; fall back to a linear penalty
        self.threshold = math.cos(math.pi - m2)
        self.fallback = math.sin(math.pi - m2) * m2

    def forward(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        rows = (target >= 0).nonzero().squeeze(1)
        target = target[rows]
        target_cos = cosine[rows, target]
        if self.m1 != 1.0 or self.m2 != 0.0:
            theta = torch.acos(target_cos.clamp(-1 + 1e-7, 1 - 1e-7))
            angular = torch.cos(self.m1 * theta + self.m2)
            target_cos = torch.where(target_cos > self.threshold, angular, target_cos - self.fallback)
        target_cos = target_cos - self.m3
        logits = cosine.clone()
        logits[rows, target] = target_cos
        return logits * self.s

    def extra_repr(self) -> str:
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}"


def build_margin(name: str, s: float, m: float) -> CombinedMargin:
    if name == "cosface":
        return CombinedMargin(s=s, m3=m)
    if name == "arcface":
        return CombinedMargin(s=s, m2=m)
    raise ValueError(f"unknown margin {name!r}; choose cosface or arcface")
