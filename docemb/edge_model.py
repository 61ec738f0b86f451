"""The graph a phone runs: the trained model rewritten for LiteRT's kernels, same function.

Three rewrites, each exact (to float rounding):
- the head's BatchNorm1d folded into the layer before it (docemb.fold);
- for int8, HardSwish written as x * relu6(x + 3) / 6: LiteRT has an int8 HARD_SWISH kernel but
  XNNPACK does not take it, so the backbone's 27 HardSwish split the int8 graph into 26
  partitions (4.6x slower than float); ADD (with RELU6 fused) and MUL are delegated. The two
  constants are 1x1x1x1 tensors, not scalars: litert-torch only moves an op to NHWC when all
  its inputs are 4-D, and scalar constants left a TRANSPOSE pair around every HardSwish;
- optionally NHWC input (no TRANSPOSE at the start) and normalisation built in, so that the model
  takes RGB pixel values 0-255 as MediaPipe's ImageEmbedder feeds them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from docemb.fold import fold_head_batchnorm
from docemb.preprocess import Preprocessing

Layout = Literal["NCHW", "NHWC"]


class DecomposedHardSwish(nn.Module):
    """HardSwish of a 4-D tensor from ops every int8 delegate takes: x * relu6(x + 3) * (1/6)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0))
        self.register_buffer("sixth", torch.full((1, 1, 1, 1), 1.0 / 6.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (F.relu6(x + self.three) * self.sixth)


class EdgeInput(nn.Module):
    """Adapts the input the app gives to the NCHW normalised tensor the model was trained on."""

    def __init__(self, model: nn.Module, layout: Layout, preprocessing: Preprocessing | None) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.normalize = preprocessing is not None
        if preprocessing is not None:
            mean = torch.tensor(preprocessing.mean) * 255.0
            std = torch.tensor(preprocessing.std) * 255.0
            self.register_buffer("mean", mean.view(1, 3, 1, 1))
            self.register_buffer("inv_std", (1.0 / std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        if self.normalize:
            x = (x - self.mean) * self.inv_std
        return self.model(x)


def decompose_hardswish(model: nn.Module) -> int:
    """Replace every nn.Hardswish in `model` (in place); returns how many."""
    count = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Hardswish):
                setattr(parent, name, DecomposedHardSwish())
                count += 1
    return count


def edge_model(
    model: nn.Module,
    *,
    int8: bool = False,
    layout: Layout = "NCHW",
    builtin_normalization: Preprocessing | None = None,
) -> nn.Module:
    """An eval-mode copy of an EmbeddingModel ready for conversion to LiteRT.

    `int8` decomposes HardSwish (see the module doc); `layout` sets the input layout;
    `builtin_normalization` makes the model take RGB 0-255 floats and normalise them itself.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    edge, _ = fold_head_batchnorm(model.eval())  # a copy: the rewrites below leave `model` alone
    if int8:
        decompose_hardswish(edge)
    if layout == "NCHW" and builtin_normalization is None:
        return edge.eval()
    return EdgeInput(edge, layout, builtin_normalization).eval()


def sample_input(size: int, layout: Layout) -> torch.Tensor:
    """The batch-1 input the converters trace the model at."""
    shape = (1, size, size, 3) if layout == "NHWC" else (1, 3, size, size)
    return torch.zeros(shape)
