"""PartialFC: a margin-softmax classifier over millions of classes that samples its centres.

Each step scores the batch against only `sample_rate` of the class centres, but always against
every centre that is a positive in the batch (if the positives alone exceed the sample, all of
them are kept). The softmax over this subset approximates the full one, at a fraction of the
compute and activation memory (An et al., "Partial FC", 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from docemb.model import l2_normalize


class PartialFC(nn.Module):
    def __init__(self, num_classes: int, embedding_dim: int, margin: nn.Module, sample_rate: float = 0.1) -> None:
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.num_classes = num_classes
        self.sample_rate = sample_rate
        self.margin = margin
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, embedding_dim)))

    def sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted indices of the centres used this step, and the labels remapped into them."""
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
        positives = torch.unique(labels, sorted=True)
        num_sample = max(int(self.sample_rate * self.num_classes), positives.numel())
        if num_sample >= self.num_classes:
            return torch.arange(self.num_classes, device=labels.device), labels
        scores = torch.rand(self.num_classes, device=labels.device)
        scores[positives] = 2.0  # above any random score: positives are always in the top k
        index = torch.topk(scores, num_sample, sorted=False).indices.sort().values
        return index, torch.searchsorted(index, labels)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        index, target = self.sample(labels)
        centres = l2_normalize(self.weight[index])
        cosine = (l2_normalize(embeddings) @ centres.T).clamp(-1, 1)
        return F.cross_entropy(self.margin(cosine, target), target)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, sample_rate={self.sample_rate}"
