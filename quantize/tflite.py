"""int8 TFLite through PT2E (torch.export + torchao observers + litert-torch's quantizer).

TFLite int8 starts from the PyTorch checkpoint, not from the float .tflite: the quantizer
annotates the torch graph, observers see calibration images there, and litert-torch writes the
int8 graph. The graph is docemb.edge_model's: HardSwish decomposed so XNNPACK takes every op, and
by default a float front (stem and first blocks), which XNNPACK runs faster in float than in int8
on the default model and which carries the most int8 error.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from docemb.atomic import atomic_path
from docemb.edge_model import DEFAULT_FLOAT_FRONT_STRIDE, FloatFront, Layout, edge_model, sample_input
from docemb.errors import DocembError
from docemb.litert import EXTRA_HINT, convert
from docemb.model import EmbeddingModel, L2Normalize
from docemb.quantize.qat import QatPlan, qat_finetune


@contextlib.contextmanager
def quiet_imports():
    """torchao logs a warning per CUDA kernel library it cannot load on a CPU-only machine."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _to_layout(batch: np.ndarray, layout: Layout) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    return tensor.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else tensor


def quantize_tflite(
    model: EmbeddingModel,
    path: str | os.PathLike,
    calibration: np.ndarray | None,
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
    add_float_input). With `calibration=None`: dynamic-range, int8 weights of convs and
    linears, activations quantized at run time, float I/O. With `qat`, static int8 is
    fine-tuned towards the float model before conversion (docemb.quantize.qat); the calibration
    images then set the starting activation ranges.
    """
    try:
        with quiet_imports():
            from litert_torch.quantize import pt2e_quantizer
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e
            from torchao.quantization.pt2e.utils import _fuse_conv_bn_
    except ImportError:
        raise DocembError(f"{path}: int8 TFLite needs litert-torch; {EXTRA_HINT}") from None

    dynamic = calibration is None
    if float_input and float_front_stride and not dynamic:
        raise DocembError(f"{path}: with a float front the input is float32 already; float_input is for full integer")
    if qat is not None and dynamic:
        raise DocembError(f"{path}: quantization-aware fine-tuning is for static int8; give calibration images")
    module = edge_model(model, int8=not dynamic, float_front_stride=0 if dynamic else float_front_stride, layout=layout)
    sample = sample_input(model.config.input_size, layout)
    quantizer = _quantizer(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic))
    if qat is None:
        graph = quantize_pt2e.prepare_pt2e(torch.export.export(module, (sample,)).module(), quantizer)
        with torch.no_grad():
            if dynamic:
                graph(sample)  # per-channel weight observers need one pass to see their weights
            else:
                _calibrate(graph, calibration, layout)
    else:
        teacher = copy.deepcopy(module)  # training updates the graph's weights in place
        # trained in batches: exported with a free batch size (traced at 1, it would be fixed),
        # BatchNorm folded into the convs first, as prepare_pt2e does
        batch = torch.export.Dim("batch", min=1, max=1024)
        batch_sample = sample.expand(2, *sample.shape[1:])
        exported = torch.export.export(module, (batch_sample,), dynamic_shapes=({0: batch},)).module()
        _fuse_conv_bn_(exported)
        with warnings.catch_warnings():  # torch's own pytree code trips its LeafSpec deprecation when copied
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            post_training = quantize_pt2e.prepare_pt2e(copy.deepcopy(exported), quantizer)
        with torch.no_grad():
            _calibrate(post_training, calibration, layout)
        # fake-quantize modules on the post-training patterns: litert-torch's QAT-only conv+BN
        # annotators fail under this torchao (they hand torch.export a function), and BatchNorm
        # is folded already, so those patterns would match nothing
        config = pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
        quantizer = _quantizer(dataclasses.replace(config, is_qat=False))
        graph = quantize_pt2e.prepare_qat_pt2e(exported, quantizer)
        with torch.no_grad():
            graph(sample)  # weight observers see their weights; activation ranges are set next
        start_from_post_training_ranges(graph, post_training)
        qat_finetune(graph, teacher, qat, lambda batch: _to_layout(batch, layout))
    graph = move_exported_model_to_eval(quantize_pt2e.convert_pt2e(graph, fold_quantize=False))
    convert(graph, sample, Path(path), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    if float_input and not dynamic:
        add_float_input(Path(path))
    return Path(path)


def _quantizer(config):
    """litert-torch's quantizer with `config` everywhere but the float front and the final L2
    normalisation (see docemb.model.L2Normalize), which stay float."""
    from litert_torch.quantize import pt2e_quantizer

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(config)
    # torch.export records module types by qualified name, which the quantizer's filter compares
    for stays_float in (FloatFront, L2Normalize):
        quantizer.set_module_type(f"{stays_float.__module__}.{stays_float.__qualname__}", None)
    return quantizer


def _calibrate(graph: torch.nn.Module, calibration: np.ndarray, layout: Layout) -> None:
    for row in tqdm(calibration, desc="calibrate int8 tflite", unit="img", leave=False):
        graph(_to_layout(row[None], layout))


def start_from_post_training_ranges(qat_graph: torch.nn.Module, post_training: torch.nn.Module) -> int:
    """Give every activation fake-quantize of `qat_graph` the range that histogram calibration
    found in `post_training` (the same graph prepared for post-training int8, where observers
    sit at the same names), so the fine-tune starts where post-training int8 ends; the
    moving-average min/max the fine-tune's own observers keep clips less well. Returns how many
    ranges were set."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase
    from torchao.quantization.pt2e.observer import HistogramObserver

    calibrated = {name: m for name, m in post_training.named_modules() if isinstance(m, HistogramObserver)}
    count = 0
    for name, fake_quant in qat_graph.named_modules():
        if name not in calibrated or not isinstance(fake_quant, FakeQuantizeBase):
            continue
        scale, zero_point = calibrated[name].calculate_qparams()
        observer = fake_quant.activation_post_process
        # the min/max that give this scale and zero point back: convert_pt2e reads the observer
        observer.min_val = ((observer.quant_min - zero_point) * scale).reshape(())
        observer.max_val = ((observer.quant_max - zero_point) * scale).reshape(())
        fake_quant.scale.copy_(scale)
        fake_quant.zero_point.copy_(zero_point)
        count += 1
    if count != len(calibrated):
        raise DocembError(
            f"fine-tune graph and post-training graph differ: {count} of {len(calibrated)} activation ranges matched"
        )
    return count


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
