"""The PT2E int8 graph (torch.export + torchao observers + litert-torch's quantizer annotations)
that int8 TFLite files and the fine-tuned int8 ONNX file are both written from.

Static int8: weights int8 symmetric per channel, activations int8 per tensor from histogram
calibration, BatchNorm folded into the convs, the float front and the final L2 normalisation
left in float (docemb.edge_model, docemb.model.L2Normalize). With a QatPlan the graph carries
fake-quantize modules instead of observers and is fine-tuned towards the float model
(docemb.quantize.qat), starting from the post-training ranges.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import warnings

import numpy as np
import torch
from tqdm import tqdm

from docemb.edge_model import FloatFront, Layout, edge_model, sample_input
from docemb.errors import DocembError
from docemb.litert import EXTRA_HINT
from docemb.model import EmbeddingModel, L2Normalize
from docemb.quantize.qat import QatPlan, observe_weight_ranges, qat_finetune


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


def to_layout(batch: np.ndarray, layout: Layout) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(batch))
    return tensor.permute(0, 2, 3, 1).contiguous() if layout == "NHWC" else tensor


def int8_graph(
    model: EmbeddingModel,
    calibration: np.ndarray,
    layout: Layout,
    float_front_stride: int,
    qat: QatPlan | None = None,
    what: str = "int8",
    split_hardswish: bool = True,
):
    """`model` as a PT2E graph annotated for int8, and the quantizer that annotated it.

    With `calibration` (NCHW normalised inputs) the graph holds calibrated histogram observers
    (post-training static) or, with `qat`, fake-quantize modules fine-tuned towards the float
    model. `what` names the output in errors; `split_hardswish` is docemb.edge_model's (XNNPACK
    wants it, onnxruntime does not)."""
    if qat is not None:
        graph, quantizer, teacher = fake_quantized_graph(model, calibration, layout, float_front_stride, what, split_hardswish)
        qat_finetune(graph, teacher, qat, lambda batch: to_layout(batch, layout))
        return graph, quantizer
    quantize_pt2e, _ = _pt2e_modules(what)
    module = edge_model(model, int8=True, float_front_stride=float_front_stride, layout=layout, split_hardswish=split_hardswish)
    sample = sample_input(model.config.input_size, layout)
    quantizer = _quantizer(_config())
    graph = quantize_pt2e.prepare_pt2e(torch.export.export(module, (sample,)).module(), quantizer)
    with torch.no_grad():
        _calibrate(graph, calibration, layout)
    return graph, quantizer


def fake_quantized_graph(
    model: EmbeddingModel,
    calibration: np.ndarray,
    layout: Layout,
    float_front_stride: int,
    what: str = "int8",
    split_hardswish: bool = True,
):
    """Static int8 `model` as a graph of fake-quantize modules fixed at the post-training
    (histogram) ranges, batch size free, ready to train or to switch layers to float; returns the graph,
    its quantizer and the float module it computes (the fine-tune's teacher)."""
    quantize_pt2e, fuse_conv_bn = _pt2e_modules(what)
    module = edge_model(model, int8=True, float_front_stride=float_front_stride, layout=layout, split_hardswish=split_hardswish)
    sample = sample_input(model.config.input_size, layout)
    teacher = copy.deepcopy(module)  # training updates the graph's weights in place
    # exported with a free batch size (traced at 1, it would be fixed), BatchNorm folded into
    # the convs first, as prepare_pt2e does
    batch = torch.export.Dim("batch", min=1, max=1024)
    batch_sample = sample.expand(2, *sample.shape[1:])
    exported = torch.export.export(module, (batch_sample,), dynamic_shapes=({0: batch},)).module()
    fuse_conv_bn(exported)
    with warnings.catch_warnings():  # torch's own pytree code trips its LeafSpec deprecation when copied
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        post_training = quantize_pt2e.prepare_pt2e(copy.deepcopy(exported), _quantizer(_config()))
    with torch.no_grad():
        _calibrate(post_training, calibration, layout)
    # fake-quantize modules on the post-training patterns: litert-torch's QAT-only conv+BN
    # annotators fail under this torchao (they hand torch.export a function), and BatchNorm
    # is folded already, so those patterns would match nothing
    quantizer = _quantizer(dataclasses.replace(_config(is_qat=True), is_qat=False))
    graph = quantize_pt2e.prepare_qat_pt2e(exported, quantizer)
    with torch.no_grad():
        graph(sample)  # weight observers see their weights; activation ranges are set next
    start_from_post_training_ranges(graph, post_training)
    observe_weight_ranges(graph, False)  # fixed ranges: measured as they are, until a fine-tune frees the weights' ranges
    return graph, quantizer, teacher


def _pt2e_modules(what: str):
    """torchao's PT2E entry points and its conv+BN folding, or a clear error naming `what`."""
    try:
        with quiet_imports():
            from litert_torch.quantize import pt2e_quantizer  # noqa: F401  (what _quantizer and _config build on)
            from torchao.quantization.pt2e import quantize_pt2e
            from torchao.quantization.pt2e.utils import _fuse_conv_bn_
    except ImportError:
        raise DocembError(f"{what}: int8 through PT2E needs litert-torch; {EXTRA_HINT}") from None
    return quantize_pt2e, _fuse_conv_bn_


def _config(is_qat: bool = False):
    """litert-torch's static int8 config: weights symmetric per channel, activations per tensor."""
    from litert_torch.quantize import pt2e_quantizer

    return pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_qat=is_qat)


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
    for row in tqdm(calibration, desc="calibrate int8", unit="img", leave=False):
        graph(to_layout(row[None], layout))


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
