"""Learned whitening of a trained model's embedding (PCA whitening with shrinkage).

A trained head's outputs share one dominant direction and spread over few others, so cosine
scores crowd near 1: neighbours are separated by small margins, match thresholds sit near 1
and int8 noise flips rankings. Centring on the mean of reference images and scaling each
principal direction to unit variance (shrunk towards the mean variance, so that directions the
reference barely saw are not blown up) spreads the scores. The transform is one Linear layer at
the end of the head (`ModelConfig.whitening`), so every exported format carries it.

The reference is training data: pool images as they are and as training-augmented captures
(docemb.photo), never evaluation data, whose captures come from other code (docemb.capture).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from docemb.errors import DocembError
from docemb.model import EmbeddingModel, build_model

DEFAULT_SHRINK = 0.1  # share of the mean variance added to every direction's (docs/results.md)


@torch.no_grad()
def head_outputs(model: EmbeddingModel, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
    """The head's outputs before L2 normalisation, for RGB uint8 images of any size."""
    model.eval()
    prep = model.preprocessing
    rows = []
    for start in tqdm(range(0, len(images), batch_size), desc="whitening reference", unit="batch", leave=False):
        batch = torch.from_numpy(prep.normalize(np.stack([prep.resize(i) for i in images[start : start + batch_size]])))
        rows.append(model.head(model.backbone(batch)[-1]).numpy())
    return np.concatenate(rows).astype(np.float64)


def reference_views(images: Sequence[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Each image as it is and as one training-augmented capture on another image of the set."""
    from docemb.photo import capture_augmentation, distort, loose_capture

    rng = np.random.default_rng(seed)
    pipeline = capture_augmentation(seed=seed)
    views = []
    for image in images:
        background = images[int(rng.integers(len(images)))]
        views += [image, distort(loose_capture(image, background, rng), pipeline)]
    return views


def whitening(outputs: np.ndarray, shrink: float = DEFAULT_SHRINK) -> tuple[np.ndarray, np.ndarray]:
    """(mean, matrix) with (x - mean) @ matrix having unit variance along each principal
    direction of `outputs`, after adding `shrink` times the mean variance to each."""
    if len(outputs) < 2 * outputs.shape[1]:
        raise DocembError(
            f"whitening {outputs.shape[1]}-d embeddings needs at least {2 * outputs.shape[1]} reference views, got {len(outputs)}"
        )
    mean = outputs.mean(axis=0)
    variances, directions = np.linalg.eigh(np.cov((outputs - mean).T))
    variances = np.clip(variances, 0, None)
    return mean, directions / np.sqrt(variances + shrink * variances.mean())


def whitened(
    model: EmbeddingModel, images: Sequence[np.ndarray], shrink: float = DEFAULT_SHRINK, seed: int = 0
) -> EmbeddingModel:
    """A copy of `model` whose head ends in the whitening fitted on `images` (training data)."""
    if model.config.whitening:
        raise DocembError("the model is whitened already; whiten the checkpoint it was made from")
    mean, matrix = whitening(head_outputs(model, reference_views(images, seed)), shrink)
    out = build_model(dataclasses.replace(model.config, whitening=True))
    out.load_state_dict(model.state_dict(), strict=False)
    layer = out.head.fc[-1]
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(matrix.T.astype(np.float32)))
        layer.bias.copy_(torch.from_numpy((-mean @ matrix).astype(np.float32)))
    return out.eval()
