"""Quantization-aware fine-tuning: the last step when post-training int8 drifts too far.

The fake-quantized int8 graph (PT2E, the same graph and quantizer as post-training int8) is
trained to reproduce the float model: each embedding (cosine to the float one) and the cosine
scores between the images of a batch, clean templates (framed as registered) and
photo-distorted views of them side by side. Template matching ranks by those scores, so that is what the loss keeps.
No labels are needed: any folder of images like the ones users match will do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from docemb.errors import DocembError
from docemb.preprocess import Preprocessing

if TYPE_CHECKING:  # torch and the photo pipeline load when a fine-tune runs, not when the CLI reads QatSettings
    import torch
    from torch import nn


@dataclass(frozen=True)
class QatSettings:
    """A short fine-tune; steps and lr were picked by validation drift (docs/results.md)."""

    steps: int = 600
    batch_size: int = 32  # half clean images, half distorted views of the same images
    lr: float = 4e-4
    # weight ranges follow the weights for this share of the steps, then stay fixed so the
    # weights settle on the grid the int8 model will use
    observe_share: float = 0.3
    # the learning rate rises linearly over this share of the steps: Adam's first steps move
    # every weight by about lr at once, which threw the int8 graph far from the float model
    warmup_share: float = 0.1
    relation_weight: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class QatPlan:
    """What the fine-tune trains on: RGB uint8 images (distorted afresh every step) and the
    preprocessing the model was trained with."""

    images: list[np.ndarray]
    preprocessing: Preprocessing
    settings: QatSettings = QatSettings()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, relation_weight: float) -> torch.Tensor:
    """1 - cosine to the teacher's embedding, plus the squared error of every pairwise score
    (both sets L2-normalised, so a Gram matrix is the matrix of cosine scores)."""
    pointwise = 1.0 - (student * teacher).sum(dim=-1).mean()
    relation = (student @ student.T - teacher @ teacher.T).pow(2).mean()
    return pointwise + relation_weight * relation


def learning_rate(settings: QatSettings, step: int) -> float:
    """Linear warm-up, then cosine decay to zero."""
    warmup = max(1, int(settings.steps * settings.warmup_share))
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, settings.steps - warmup)))


def observe_weight_ranges(graph: nn.Module, enabled: bool) -> None:
    """Weight ranges (per channel) follow the weights while `enabled`, else every range stays
    fixed; activation ranges always stay where calibration put them
    (docemb.quantize.pt2e.start_from_post_training_ranges)."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    for module in graph.modules():
        if isinstance(module, FakeQuantizeBase):
            module.enable_observer(enabled and module.is_per_channel)


def qat_finetune(
    graph: nn.Module, teacher: nn.Module, plan: QatPlan, to_input: Callable[[np.ndarray], torch.Tensor]
) -> list[float]:
    """Train `graph` (from prepare_qat_pt2e) in place towards `teacher` (the float model, left
    unchanged); `to_input` turns NCHW normalised arrays into the graph's input. Returns the
    loss of every step."""
    import torch
    from tqdm import tqdm

    from docemb.photo import distort, photo_distortion

    images, preprocessing, settings = plan.images, plan.preprocessing, plan.settings
    if len(images) < 2:
        raise DocembError(f"quantization-aware fine-tuning needs at least 2 calibration images, got {len(images)}")
    rng = np.random.default_rng(settings.seed)
    pipeline = photo_distortion("medium", seed=settings.seed)
    teacher.eval()
    params = list(graph.parameters())
    for param in params:  # BatchNorm folding leaves the convs' new biases frozen; they shift activations, so train them
        param.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    observe_steps = int(settings.steps * settings.observe_share)
    half = max(1, settings.batch_size // 2)
    losses: list[float] = []
    observe_weight_ranges(graph, True)
    progress = tqdm(range(settings.steps), desc="int8 fine-tune", unit="step", leave=False)
    for step in progress:
        if step == observe_steps:
            observe_weight_ranges(graph, False)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(settings, step)
        chosen = rng.choice(len(images), size=min(half, len(images)), replace=False)
        templates = [preprocessing.template(images[i]) for i in chosen]
        views = [preprocessing.resize(distort(images[i], pipeline)) for i in chosen]
        batch = to_input(preprocessing.normalize(np.stack(templates + views)))
        with torch.no_grad():
            target = teacher(batch)
        loss = distillation_loss(graph(batch), target, settings.relation_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.5f}")
    observe_weight_ranges(graph, False)
    return losses
