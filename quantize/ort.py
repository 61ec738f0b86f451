"""onnxruntime int8: dynamic (weights only) and static QDQ (weights and activations).

Static quantization needs activation ranges from calibration data; which estimator gives the
ranges that keep embeddings closest to float depends on the model, so we try each and keep the
one with the least measured drift on held-apart validation images.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder
from docemb.evaluation import cosine_drift

METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


class ArrayReader(CalibrationDataReader):
    """Feeds calibration inputs to onnxruntime one image at a time: the histogram collectors
    behind entropy and percentile calibration fail on batches of unequal size."""

    def __init__(self, input_name: str, inputs: np.ndarray) -> None:
        self.batches = iter([{input_name: inputs[i : i + 1]} for i in range(len(inputs))])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def preprocess_for_quantization(float_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
    """Shape inference and graph optimisation that static quantization expects first.

    The optimiser inlines function ops (HardSwish becomes HardSigmoid and Mul) into nodes with
    no name; each gets one here, so every node can be named in `nodes_to_exclude` and reports.
    """
    with quiet_onnxruntime():
        quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=False)
    graph = onnx.load(str(out_path))
    for index, node in enumerate(graph.graph.node):
        if not node.name:
            node.name = f"unnamed_{node.op_type}_{index}"
    onnx.save(graph, str(out_path))


def quantize_dynamic_int8(float_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """int8 weights (per channel), activations quantized on the fly at run time."""
    with tempfile.TemporaryDirectory() as work, atomic_path(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)
        with quiet_onnxruntime():
            quantize_dynamic(str(prepared), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
    return Path(out_path)


@contextlib.contextmanager
def quiet_onnxruntime():
    """onnxruntime's quantizer logs one INFO line per tensor, prints its calibration progress, and
    warns that LayerNorm's 1-d weights have no axis 1 (they are quantized per tensor, as they
    should be). None of it helps the user; the drift we measure afterwards does."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def quantize_static_int8(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    method: str,
    input_name: str = "image",
    nodes_to_exclude: list[str] | None = None,
) -> Path:
    """QDQ int8: per-channel symmetric int8 weights, uint8 activations with calibrated ranges;
    the nodes named in `nodes_to_exclude` stay in float (mixed precision)."""
    with tempfile.TemporaryDirectory() as work, atomic_path(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)
        with quiet_onnxruntime():
            quantize_static(
                str(prepared),
                str(tmp),
                ArrayReader(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=METHODS[method],
                nodes_to_exclude=nodes_to_exclude or [],
                extra_options={"CalibTensorRangeSymmetric": False},
            )
    return Path(out_path)


def pick_static_method(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    validation: np.ndarray,
    methods: tuple[str, ...] = tuple(METHODS),
) -> tuple[str, dict[str, dict[str, float]]]:
    """Quantize once per calibration method, keep the one whose embeddings of `validation` stay
    closest to float (highest mean cosine); returns its name and every method's drift."""
    reference = onnx_embedder(float_path)(validation)
    results: dict[str, dict[str, float]] = {}
    best = None
    with tempfile.TemporaryDirectory() as work:
        for method in methods:
            candidate = Path(work) / f"{method}.onnx"
            quantize_static_int8(float_path, candidate, calibration, method)
            results[method] = cosine_drift(reference, onnx_embedder(candidate)(validation))
            if best is None or results[method]["cos_mean"] > results[best]["cos_mean"]:
                best = method
                os.replace(candidate, Path(work) / "best.onnx")
        with atomic_path(out_path) as tmp:
            os.replace(Path(work) / "best.onnx", tmp)
    return best, results
