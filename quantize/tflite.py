"""int8 TFLite through PT2E (docemb.quantize.pt2e's graph, written by litert-torch).

TFLite int8 starts from the PyTorch checkpoint, not from the float .tflite: the quantizer
annotates the torch graph, observers see calibration images there, and litert-torch writes the
int8 graph. The graph is docemb.edge_model's: HardSwish decomposed so XNNPACK takes every op, and
by default a float front (stem and first blocks), which XNNPACK runs faster in float than in int8
on the default model and which carries the most int8 error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from docemb.atomic import atomic_path
from docemb.edge_model import DEFAULT_FLOAT_FRONT_STRIDE, Layout, sample_input
from docemb.errors import DocembError
from docemb.litert import convert
from docemb.model import EmbeddingModel
from docemb.quantize.pt2e import int8_graph, quiet_imports
from docemb.quantize.qat import QatPlan


def quantize_tflite(
    model: EmbeddingModel,
    path: str | os.PathLike,
    calibration: np.ndarray,
    layout: Layout = "NHWC",
    float_input: bool = False,
    float_front_stride: int = DEFAULT_FLOAT_FRONT_STRIDE,
    qat: QatPlan | None = None,
) -> Path:
    """Write int8 `model` to `path`.

    With `calibration` (NCHW normalised inputs): static, weights int8 symmetric per-channel,
    activations int8 per-tensor from histogram observers, the L2-normalised output float32.
    `float_front_stride` > 0 keeps the backbone's front up to that output stride in float
    (docemb.edge_model), so the input is float32; with 0 the model is full integer with an int8
    input, and `float_input` puts a QUANTIZE in front so the input is float32 (see
    add_float_input). With `qat`, static int8 is fine-tuned towards the float model before
    conversion (docemb.quantize.qat); the calibration images then set the starting activation
    ranges. (Dynamic int8 rewrites the float .tflite instead: docemb.quantize.tflite_dynamic.)
    """
    if float_input and float_front_stride:
        raise DocembError(f"{path}: with a float front the input is float32 already; float_input is for full integer")
    graph, quantizer = int8_graph(model, calibration, layout, float_front_stride, qat, what=str(path))
    with quiet_imports():
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    convert(graph, sample_input(model.config.input_size, layout), Path(path), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    if float_input:
        add_float_input(Path(path))
    return Path(path)


def add_float_input(path: Path) -> Path:
    """Give a full-integer model a float32 input: a QUANTIZE op (float32 -> the int8 input's
    own scale and zero point) goes in front, so an app feeds normalised floats and XNNPACK
    quantizes in its partition. litert-torch always folds the first quantize into an int8 input."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    graph = model.subgraphs[0]
    if len(graph.inputs) != 1:
        raise DocembError(f"{path}: expected one input, found {len(graph.inputs)}")
    int8_index = int(graph.inputs[0])
    int8_tensor = graph.tensors[int8_index]
    if int8_tensor.type != schema.TensorType.INT8:
        raise DocembError(f"{path}: input is not int8; nothing to do")

    float_tensor = schema.TensorT()
    float_tensor.name, float_tensor.type = int8_tensor.name, schema.TensorType.FLOAT32
    float_tensor.shape, float_tensor.shapeSignature = int8_tensor.shape, int8_tensor.shapeSignature
    float_tensor.buffer = 0  # the empty buffer every model starts with: no data
    int8_tensor.name = int8_tensor.name + b"_int8"
    graph.tensors.append(float_tensor)
    float_index = len(graph.tensors) - 1

    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    if schema.BuiltinOperator.QUANTIZE not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.QUANTIZE
        code.version = 1
        model.operatorCodes.append(code)
        codes.append(schema.BuiltinOperator.QUANTIZE)
    quantize = schema.OperatorT()
    quantize.opcodeIndex = codes.index(schema.BuiltinOperator.QUANTIZE)
    quantize.inputs, quantize.outputs = [float_index], [int8_index]
    graph.operators.insert(0, quantize)
    graph.inputs = [float_index]
    for signature in model.signatureDefs or []:
        for entry in signature.inputs:
            if entry.tensorIndex == int8_index:
                entry.tensorIndex = float_index

    builder = flatbuffers.Builder(path.stat().st_size + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with atomic_path(path) as tmp:
        tmp.write_bytes(builder.Output())
    return path
