"""Fold the head's eval-mode BatchNorm1d into the layer before it, for export and quantization.

No exporter folds a BatchNorm1d that follows a LayerNorm or a Linear, so it reaches the ONNX and
TFLite graphs as its own Mul/Add pair: two more ops per block, and two more tensors whose
ranges int8 must cover. In eval mode BatchNorm is a fixed per-feature affine map,
y = (x - mean) / sqrt(var + eps) * gamma + beta, so it composes exactly into the affine of the
layer before it: LayerNorm's weight and bias, or Linear's rows and bias.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _batchnorm_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift in eval mode."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    shift = -bn.running_mean * scale
    if bn.affine:
        scale, shift = scale * bn.weight, shift * bn.weight + bn.bias
    return scale, shift


@torch.no_grad()
def _fold_into(layer: nn.LayerNorm | nn.Linear, bn: nn.BatchNorm1d) -> nn.Module:
    """A copy of `layer` that also applies `bn` after itself: each output feature's weights
    (LayerNorm: its one weight; Linear: its row) and bias are scaled, and the shift added."""
    if isinstance(layer, nn.LayerNorm) and not layer.elementwise_affine:
        raise ValueError("cannot fold into a LayerNorm without elementwise affine")
    scale, shift = _batchnorm_affine(bn)
    folded = copy.deepcopy(layer)
    folded.weight.copy_(layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1)))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    if folded.bias is None:
        folded.bias = nn.Parameter(torch.empty_like(scale))
    folded.bias.copy_(bias * scale + shift)
    return folded


def fold_batchnorm(sequential: nn.Sequential) -> tuple[nn.Sequential, int]:
    """A copy of `sequential` with every BatchNorm1d that directly follows a LayerNorm or a
    Linear folded into it; returns it and how many were folded."""
    layers: list[nn.Module] = []
    folded = 0
    for layer in sequential:
        if isinstance(layer, nn.BatchNorm1d) and layers and isinstance(layers[-1], (nn.LayerNorm, nn.Linear)):
            layers[-1] = _fold_into(layers[-1], layer)
            folded += 1
        else:
            layers.append(copy.deepcopy(layer))
    return nn.Sequential(*layers), folded


def fold_head_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of an EmbeddingModel whose head has no BatchNorm1d left to run.

    Returns the copy and the number of BatchNorm1d folded. The copy computes the same function
    (to float rounding) and is meant for export; it is not a checkpoint to train further.
    """
    if model.training:
        raise ValueError("fold BatchNorm only in eval mode: training-mode BatchNorm uses batch statistics")
    folded_model = copy.deepcopy(model)
    folded_model.head.fc, count = fold_batchnorm(model.head.fc)
    return folded_model.eval(), count
