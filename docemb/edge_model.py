"""The graph a phone runs: the trained model rewritten for LiteRT's kernels, same function.

Rewrites, each exact (to float rounding):
- the head's BatchNorm1d folded into the layer before it (docemb.fold);
- for int8, the float front: the stem and the blocks up to a small output stride are wrapped in
  FloatFront, which the int8 quantizer leaves in float: XNNPACK runs 3-channel first layers
  faster in float than in int8, and those layers add the most int8 error (measured in
  docs/quantization.md);
- for int8, HardSwish after the float front written as x * relu6(x + 3) / 6: LiteRT has an int8
  HARD_SWISH kernel but XNNPACK does not take it, so each HardSwish would split the int8 graph
  into another partition; ADD (with RELU6 fused) and MUL are delegated. The two constants are
  1x1x1x1 tensors, not scalars: litert-torch only moves an op to NHWC when all its inputs are
  4-D, and scalar constants left a TRANSPOSE pair around every HardSwish. onnxruntime has no
  int8 HardSwish either, but runs one float HardSwish between DequantizeLinear and
  QuantizeLinear faster than the four decomposed ops, so the int8 ONNX graph keeps it whole
  (`split_hardswish=False`);
- optionally NHWC input (no TRANSPOSE at the start) and normalisation built in, so that the model
  takes RGB pixel values 0-255 as MediaPipe's ImageEmbedder feeds them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from docemb.fold import fold_head_batchnorm
from docemb.preprocess import Preprocessing

Layout = Literal["NCHW", "NHWC"]
# int8 keeps the stem and the blocks up to this output stride in float: on the shipped lcnet_100
# it keeps Recall@1 within a point of float, still faster than float (docs/quantization.md)
DEFAULT_FLOAT_FRONT_STRIDE = 16


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


class FloatFront(nn.Module):
    """Marks a module that int8 conversion leaves in float (docemb.quantize.tflite names this
    type to the quantizer); the forward is the wrapped module's."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def _stages(backbone: nn.Module) -> list[str]:
    """The backbone's sequential steps in order: stem modules, then each of `blocks`."""
    names = []
    for name, child in backbone.named_children():
        if name == "blocks":
            names += [f"blocks.{index}" for index in range(len(child))]
        else:
            names.append(name)
    return names


def front_modules(backbone: nn.Module, max_stride: int, input_size: int) -> list[str]:
    """Names of the backbone's leading steps whose output stride is at most `max_stride`
    (measured with hooks on one pass, so it holds for any timm stem-and-blocks network)."""
    if max_stride < 2:
        return []
    strides: dict[str, int] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            strides[name] = input_size // output.shape[-1]

        return hook

    hooks = [backbone.get_submodule(name).register_forward_hook(record(name)) for name in _stages(backbone)]
    try:
        with torch.no_grad():
            backbone.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for hook in hooks:
            hook.remove()
    front = []
    for name in _stages(backbone):
        if strides.get(name, max_stride + 1) > max_stride:
            break
        front.append(name)
    return front


def keep_float_front(model: nn.Module, max_stride: int) -> list[str]:
    """Wrap the backbone's front (output stride <= `max_stride`) of an EmbeddingModel in
    FloatFront, in place; returns the names wrapped."""
    names = front_modules(model.backbone, max_stride, model.config.input_size)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.backbone.get_submodule(parent) if parent else model.backbone
        setattr(owner, child, FloatFront(owner.get_submodule(child)))
    return names


def _modules_outside_float_front(module: nn.Module) -> Iterator[nn.Module]:
    yield module
    for child in module.children():
        if not isinstance(child, FloatFront):
            yield from _modules_outside_float_front(child)


def decompose_hardswish(model: nn.Module) -> int:
    """Replace every nn.Hardswish in `model` outside a FloatFront (in place); returns how many.
    In float, one HARD_SWISH op is faster than three."""
    count = 0
    for parent in list(_modules_outside_float_front(model)):
        for name, child in parent.named_children():
            if isinstance(child, nn.Hardswish):
                setattr(parent, name, DecomposedHardSwish())
                count += 1
    return count


def edge_model(
    model: nn.Module,
    *,
    int8: bool = False,
    float_front_stride: int = 0,
    layout: Layout = "NCHW",
    builtin_normalization: Preprocessing | None = None,
    split_hardswish: bool = True,
) -> nn.Module:
    """An eval-mode copy of an EmbeddingModel ready for conversion to LiteRT.

    `int8` keeps the front up to output stride `float_front_stride` in float (0: none) and,
    with `split_hardswish`, decomposes HardSwish after it (see the module doc); `layout` sets the input layout;
    `builtin_normalization` makes the model take RGB 0-255 floats and normalise them itself.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    edge, _ = fold_head_batchnorm(model.eval())  # a copy: the rewrites below leave `model` alone
    if int8:
        keep_float_front(edge, float_front_stride)
        if split_hardswish:
            decompose_hardswish(edge)
    if layout == "NCHW" and builtin_normalization is None:
        return edge.eval()
    return EdgeInput(edge, layout, builtin_normalization).eval()


def sample_input(size: int, layout: Layout) -> torch.Tensor:
    """The batch-1 input the converters trace the model at."""
    shape = (1, size, size, 3) if layout == "NHWC" else (1, 3, size, size)
    return torch.zeros(shape)
