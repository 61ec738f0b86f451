"""The int8 graph of docemb.quantize.pt2e (fine-tuned, or at its calibrated ranges) written as
an onnxruntime QDQ model.

onnxruntime's own quantizer builds its int8 graph from the float ONNX file, so a
quantization-aware fine-tune cannot reach it. Instead the fine-tuned PT2E graph, whose
fake-quantize modules hold the final scales and zero points, goes through the legacy exporter
(each fake-quantize becomes a QuantizeLinear/DequantizeLinear pair) and is then rewritten into
the QDQ form onnxruntime fuses into integer kernels (QLinearConv, QGemm):

- weights stored as int8 (per channel) behind a DequantizeLinear, not as float32 that is
  quantized at every run;
- conv and linear biases int32 with scale input scale x weight scale;
- activations uint8: the same grid as the graph's int8 (zero point + 128), which x86
  onnxruntime runs with its u8s8 kernels and leaves s8s8 convs unfused.

The weight and activation rewrites are exact; the biases move by less than half their int32
step, as they do inside onnxruntime's and TFLite's integer kernels anyway.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from docemb.atomic import atomic_path
from docemb.edge_model import DEFAULT_FLOAT_FRONT_STRIDE
from docemb.model import EmbeddingModel
from docemb.quantize.pt2e import fake_quantized_graph, int8_graph, quiet_imports
from docemb.quantize.qat import QatPlan
from docemb.torch_to_onnx import export_legacy

# the quantizer's weights are symmetric int8 on [-127, 127]; ONNX's exporter only takes
# [-128, 127]; store_weights_int8 clips to the quantizer's range again, so the file holds its values
WEIGHT_RANGE = (-127, 127)


class FrozenFakeQuantize(torch.nn.Module):
    """A fake-quantize with fixed scale and zero point, in the form the exporter writes as a
    QuantizeLinear/DequantizeLinear pair (torchao's modules use a fused observer op it lacks)."""

    def __init__(self, fake_quant: torch.nn.Module) -> None:
        super().__init__()
        self.register_buffer("scale", fake_quant.scale.detach().clone().float())
        self.register_buffer("zero_point", fake_quant.zero_point.detach().clone().int())
        self.quant_min = -128 if fake_quant.quant_min == WEIGHT_RANGE[0] else fake_quant.quant_min
        self.quant_max = fake_quant.quant_max
        self.axis = fake_quant.ch_axis if fake_quant.is_per_channel else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)
        return torch.fake_quantize_per_channel_affine(x, self.scale, self.zero_point, self.axis, self.quant_min, self.quant_max)


def freeze_fake_quantize(graph: torch.nn.Module) -> None:
    """Replace every fake-quantize module of `graph` by a FrozenFakeQuantize. Shared modules (one
    range for several tensors) sit under several names: each is replaced."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    for name, module in list(graph._modules.items()):  # named_children() lists a shared module once
        if isinstance(module, FakeQuantizeBase):
            setattr(graph, name, FrozenFakeQuantize(module))


def finetuned_onnx(
    model: EmbeddingModel,
    path: str | os.PathLike,
    calibration: np.ndarray,
    plan: QatPlan,
    io_names: tuple[str, str],
    float_front_stride: int = DEFAULT_FLOAT_FRONT_STRIDE,
) -> Path:
    """Fine-tune `model`'s int8 graph (NCHW, float front up to `float_front_stride`, HardSwish
    whole) and write it to `path` as a QDQ ONNX model with the input and output names
    `io_names`, batch free."""
    graph, _ = int8_graph(model, calibration, "NCHW", float_front_stride, plan, what=str(path), split_hardswish=False)
    return _write_qdq(graph, path, model.config.input_size, io_names)


def post_training_onnx(
    model: EmbeddingModel,
    path: str | os.PathLike,
    calibration: np.ndarray,
    io_names: tuple[str, str],
    float_front_stride: int = DEFAULT_FLOAT_FRONT_STRIDE,
) -> Path:
    """`finetuned_onnx` without the fine-tune: the graph at its histogram-calibrated ranges, in
    seconds where a fine-tune takes minutes."""
    graph, _, _ = fake_quantized_graph(model, calibration, "NCHW", float_front_stride, str(path), split_hardswish=False)
    return _write_qdq(graph, path, model.config.input_size, io_names)


def _write_qdq(graph: torch.nn.Module, path: str | os.PathLike, input_size: int, io_names: tuple[str, str]) -> Path:
    with atomic_path(path) as tmp:
        export_fake_quantized(graph, tmp, input_size, io_names)
        qdq = to_runtime_qdq(onnx.load(str(tmp)))
        onnx.checker.check_model(qdq, full_check=True)
        onnx.save(qdq, str(tmp))
    return Path(path)


def export_fake_quantized(graph: torch.nn.Module, path: str | os.PathLike, input_size: int, io_names: tuple[str, str]) -> None:
    """The fake-quantized `graph` (modified: its fake-quantize modules frozen) as ONNX, each
    fake-quantize a QuantizeLinear/DequantizeLinear pair, before to_runtime_qdq."""
    with quiet_imports():
        from torchao.quantization.pt2e import allow_exported_model_train_eval, move_exported_model_to_eval

    freeze_fake_quantize(graph)
    move_exported_model_to_eval(graph)
    allow_exported_model_train_eval(graph)  # the legacy exporter calls .eval()
    export_legacy(graph, torch.zeros(1, 3, input_size, input_size), path, io_names)


def to_runtime_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The three rewrites of the module doc, in place; returns `model`."""
    store_weights_int8(model.graph)
    quantize_biases(model.graph)
    activations_to_uint8(model.graph)
    used = {name for node in model.graph.node for name in node.input}
    for tensor in list(model.graph.initializer):
        if tensor.name not in used:
            model.graph.initializer.remove(tensor)
    return model


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _broadcast(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    if values.size > 1:
        shape[axis] = -1
    return values.reshape(shape)


def store_weights_int8(graph: onnx.GraphProto) -> None:
    """QuantizeLinear(float weight) -> DequantizeLinear becomes int8 weight -> DequantizeLinear
    (exact)."""
    constants = _constants(graph)
    initializers = {tensor.name for tensor in graph.initializer}
    dequantizers = defaultdict(list)
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            dequantizers[node.input[0]].append(node)
    folded = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in initializers:
            continue
        weight, scale, zero_point = (constants[name] for name in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        steps = np.round(weight / _broadcast(scale, weight.ndim, axis)) + _broadcast(zero_point, weight.ndim, axis)
        quantized = np.clip(steps, *WEIGHT_RANGE).astype(np.int8)
        name = f"{node.input[0]}_int8"
        graph.initializer.append(numpy_helper.from_array(quantized, name))
        for consumer in dequantizers[node.output[0]]:
            consumer.input[0] = name
        folded.append(node)
    for node in folded:
        graph.node.remove(node)


def quantize_biases(graph: onnx.GraphProto) -> None:
    """A float bias of a Conv/Gemm whose input and weight are dequantized becomes int32 with scale
    input scale x weight scale (per channel) and zero point 0, as onnxruntime's fusions expect
    and as its integer kernels (and TFLite's) quantize biases anyway. Off by at most half a step
    of that scale, far below an output step; in a full-integer graph such a difference can
    still tip roundings downstream, as any change of arithmetic does."""
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in constants:
            continue
        source, weight = producers.get(node.input[0]), producers.get(node.input[1])
        if not (source and weight and source.op_type == weight.op_type == "DequantizeLinear"):
            continue
        bias = constants[node.input[2]]
        scale = np.broadcast_to(constants[source.input[1]].reshape(-1)[0] * constants[weight.input[1]], bias.shape)
        scale = np.ascontiguousarray(scale, dtype=np.float32)
        name = f"{node.input[2]}_int32"
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.round(bias / scale).astype(np.int32), name),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros(bias.shape, np.int32), f"{name}_zero_point"),
            ]
        )
        dequantize = onnx.helper.make_node(
            "DequantizeLinear", [name, f"{name}_scale", f"{name}_zero_point"], [f"{name}_dequantized"], axis=0
        )
        node.input[2] = f"{name}_dequantized"
        graph.node.insert(index, dequantize)


def activations_to_uint8(graph: onnx.GraphProto) -> None:
    """int8 activation zero points move to uint8 (+128): the same real values on the same grid
    (exact)."""
    constants = _constants(graph)
    initializers = {tensor.name for tensor in graph.initializer}
    for index, node in enumerate(graph.node):
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
            continue  # a stored weight or bias
        zero_point = constants[node.input[2]]
        if zero_point.dtype != np.int8:
            continue
        name = f"{node.output[0]}_zero_point_uint8_{index}"
        graph.initializer.append(numpy_helper.from_array((zero_point.astype(np.int16) + 128).astype(np.uint8), name))
        node.input[2] = name
