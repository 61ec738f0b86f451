"""PartialFC: a margin-softmax classifier over millions of classes that samples its centres.

Class centres are sharded across ranks: rank r owns a contiguous block of classes. Each step
every rank sees the whole (gathered) batch, scores it against `sample_rate` of its own centres,
always keeping the centres that are positives in the batch (if the positives alone exceed the
sample, all of them are kept), and the softmax normaliser is reduced across ranks. The softmax
over this subset approximates the full one, at a fraction of the compute and activation memory
(An et al., "Partial FC", 2021). With one process no process group is needed.

By default (`sparse_update`) the centres are not handed to the optimizer: a dense AdamW step
over every centre costs more than the backbone once there are a few hundred thousand classes
(docs/training.md), though a step touches only the sampled ones. The sampled rows are a leaf of
their own, and `step_centres` applies their gradient to those rows alone (plain SGD, as
arcface_torch does). `sparse_update=False` leaves the centres to the optimizer, densely.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from docemb.model import l2_normalize


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """First class and number of classes of `rank`'s shard; shards differ in size by at most one."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, base + (rank < extra)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's rows.

    The result is multiplied by the world size: DistributedDataParallel averages the backbone's
    gradients over ranks, and the factor cancels that, so W ranks with batch B take exactly the
    step one process takes with batch W*B.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, world_size = world()
        ctx.rank, ctx.world_size, ctx.rows = rank, world_size, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows] * ctx.world_size


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy when each rank holds a block of the logits' columns.

    `target[i]` is the column of row i's class in this rank's block, or -1 when another rank
    holds it. Max and sum of the softmax are reduced across ranks, so every rank gets the loss
    of the full softmax and the exact gradient of its own columns.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        row_max = logits.max(dim=1).values
        dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = (logits - row_max[:, None]).exp()
        denominator = exp.sum(dim=1)
        dist.all_reduce(denominator)
        rows = (target >= 0).nonzero().squeeze(1)
        target_logit = torch.zeros_like(row_max)
        target_logit[rows] = logits[rows, target[rows]] - row_max[rows]
        dist.all_reduce(target_logit)
        ctx.save_for_backward(exp / denominator[:, None], rows, target)
        return (denominator.log() - target_logit).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        softmax, rows, target = ctx.saved_tensors
        softmax[rows, target[rows]] -= 1
        return softmax * (grad / softmax.shape[0]), None


class PartialFC(nn.Module):
    """Sampled margin-softmax over this rank's shard of `num_classes` class centres."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: nn.Module,
        sample_rate: float = 0.1,
        imprint: bool = True,
        imprint_momentum: float = 0.0,
        sparse_update: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.rank, self.world_size = world()
        if num_classes < self.world_size:
            raise ValueError(f"{num_classes} classes cannot be sharded over {self.world_size} ranks")
        self.num_classes = num_classes
        self.class_start, self.num_local = shard_range(num_classes, self.rank, self.world_size)
        self.sample_rate = sample_rate
        self.margin = margin
        # sparse_update: stepped by step_centres on the sampled rows; otherwise by the optimizer
        self.sparse_update = sparse_update
        self.weight = nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_dim)), requires_grad=not sparse_update)
        self._sampled: tuple[torch.Tensor, torch.Tensor] | None = None  # (index, rows leaf) of the last step
        self.imprint_enabled = imprint
        self.imprint_momentum = imprint_momentum
        self.register_buffer("imprinted", torch.zeros(self.num_local, dtype=torch.bool))
        self.fixed = False  # centres set by fix_centres: neither imprinted nor stepped

    def check_centres(self, centres: torch.Tensor) -> None:
        """Raise ValueError unless `centres` holds one row of this head's width per class."""
        if centres.shape != (self.num_classes, self.weight.shape[1]):
            raise ValueError(f"centres must be {self.num_classes} x {self.weight.shape[1]}, got {tuple(centres.shape)}")

    @torch.no_grad()
    def fix_centres(self, centres: torch.Tensor) -> None:
        """Hold every class's centre at a row of `centres` (all classes, this rank's shard taken)
        for the whole run: a trained model's template embeddings, so that captures learn to land
        where their templates already are."""
        self.check_centres(centres)
        self.weight.copy_(centres[self.class_start : self.class_start + self.num_local])
        self.weight.requires_grad_(False)
        self.imprint_enabled, self.fixed = False, True

    def _local(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels as indices into this rank's shard, and which of them the shard holds."""
        local = labels - self.class_start
        return local, (local >= 0) & (local < self.num_local)

    def sample(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted local indices of the centres used this step, and each label's column among
        them (-1 for labels held by another rank)."""
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
        local, mine = self._local(labels)
        positives = torch.unique(local[mine], sorted=True)
        num_sample = max(int(self.sample_rate * self.num_local), positives.numel())
        if num_sample >= self.num_local:
            index = torch.arange(self.num_local, device=labels.device)
        else:
            scores = torch.rand(self.num_local, device=labels.device)
            scores[positives] = 2.0  # above any random score: positives are always in the top k
            index = torch.topk(scores, num_sample, sorted=False).indices.sort().values
        target = torch.full_like(labels, -1)
        target[mine] = torch.searchsorted(index, local[mine])
        return index, target

    def sampled_loss(self, embeddings: torch.Tensor, index: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Margin cross-entropy of the (gathered) batch against the centres `index`."""
        if self.fixed:
            rows = self.weight[index].detach()
        elif self.sparse_update:
            rows = self.weight[index].detach().requires_grad_(torch.is_grad_enabled())
            self._sampled = (index, rows)
        else:
            rows = self.weight[index]
        centres = l2_normalize(rows)
        cosine = (l2_normalize(embeddings.float()) @ centres.T).clamp(-1, 1)
        logits = self.margin(cosine, target)
        if self.world_size == 1:
            return F.cross_entropy(logits, target)
        return _ShardedCrossEntropy.apply(logits, target)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Loss of this rank's batch; under torch.distributed every rank returns the same value."""
        if self.world_size > 1:
            embeddings = _GatherWithGrad.apply(embeddings)
            gathered = [torch.empty_like(labels) for _ in range(self.world_size)]
            dist.all_gather(gathered, labels.contiguous())
            labels = torch.cat(gathered)
        index, target = self.sample(labels)
        if self.imprint_enabled and self.training:
            self.imprint(embeddings.detach(), labels)
        return self.sampled_loss(embeddings, index, target)

    def centre_grad(self) -> torch.Tensor:
        """The last backward's gradient of every local centre (zero outside the sample)."""
        if not self.sparse_update:
            return self.weight.grad if self.weight.grad is not None else torch.zeros_like(self.weight)
        grad = torch.zeros_like(self.weight)
        if self._sampled is not None and self._sampled[1].grad is not None:
            grad.index_add_(0, self._sampled[0], self._sampled[1].grad)
        return grad

    @torch.no_grad()
    def step_centres(self, lr: float) -> None:
        """SGD on the centres sampled in the last step, from the gradient of their rows."""
        if self._sampled is None or self._sampled[1].grad is None:
            return
        index, rows = self._sampled
        if torch.isfinite(rows.grad).all():  # an fp16 step the gradient scaler skips
            self.weight.index_add_(0, index, rows.grad.to(self.weight.dtype), alpha=-lr)
        self._sampled = None

    @torch.no_grad()
    def imprint(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Move the centre of each class in the batch to the mean of its views.

        With every image its own class (times 24), an epoch shows each class about once, so a
        randomly initialised centre would meet its images too rarely to learn where they are
        and the loss stays at chance. Imprinting (Qi et al., "Low-Shot Learning with Imprinted
        Weights", 2018) starts each centre where its images are; since the backbone moves on
        between two visits of a class, a centre met again is refreshed too, as an exponential
        moving average with `imprint_momentum` (0 replaces it; the memory bank of Wu et al.,
        "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", 2018).
        """
        local, mine = self._local(labels)
        if not mine.any():
            return
        classes, slot = torch.unique(local[mine], return_inverse=True)
        sums = torch.zeros(len(classes), embeddings.shape[1], device=embeddings.device)
        sums.index_add_(0, slot, l2_normalize(embeddings[mine].float()))
        means = l2_normalize(sums)
        old = l2_normalize(self.weight[classes].float())
        blended = l2_normalize(self.imprint_momentum * old + (1 - self.imprint_momentum) * means)
        fresh = ~self.imprinted[classes]
        self.weight[classes] = torch.where(fresh[:, None], means, blended).to(self.weight.dtype)
        self.imprinted[classes] = True

    def extra_repr(self) -> str:
        shard = f", shard={self.class_start}..{self.class_start + self.num_local - 1}" if self.world_size > 1 else ""
        return f"num_classes={self.num_classes}, sample_rate={self.sample_rate}{shard}"
