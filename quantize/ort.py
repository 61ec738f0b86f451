"""onnxruntime int8: dynamic (weights only) and static QDQ (weights and activations).

Static quantization needs activation ranges from calibration data; which estimator gives the
ranges that keep embeddings closest to float depends on the model, so we try each and keep the
one with the least measured drift on held-apart validation images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder
from docemb.errors import DocembError
from docemb.evaluation import cosine_drift
from docemb.layer_drift import ArrayReader, preprocess_for_quantization, quiet_onnxruntime
from docemb.quantize.dynamic import DynamicChoice, WeightedLayer, largest_first

L2_NORMALIZE_SCOPE = "/normalize/"  # the ONNX node names of EmbeddingModel.normalize
DYNAMIC_OP_TYPES = ("Conv", "Gemm", "MatMul")
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


def weighted_layers(model: onnx.ModelProto) -> list[WeightedLayer]:
    """Every Conv/Gemm/MatMul with a constant weight, largest first."""
    sizes = {tensor.name: int(np.prod(tensor.dims)) for tensor in model.graph.initializer}
    layers = [
        WeightedLayer(
            node.name,
            node.op_type,
            sizes[node.input[1]],
            node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute),
        )
        for node in model.graph.node
        if node.op_type in DYNAMIC_OP_TYPES and len(node.input) > 1 and node.input[1] in sizes
    ]
    return sorted(layers, key=lambda layer: -layer.parameters)


def quantize_dynamic_int8(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    validation: np.ndarray | None = None,
    cos_mean_target: float = 0.998,
) -> DynamicChoice:
    """int8 weights (per channel), activations quantized on the fly at run time, layers int8
    largest first while `cos_mean_target` holds (docemb.quantize.dynamic). Depthwise convs stay
    float: onnxruntime's ConvInteger runs them far slower than float (default model, 1 thread:
    every layer int8 5.2 ms, this choice 1.0 ms, float 0.46 ms)."""
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)
        layers = weighted_layers(onnx.load(str(prepared)))
        if not any(not layer.depthwise for layer in layers):
            raise DocembError(f"{float_path}: no Conv, Gemm or MatMul with constant weights to quantize")

        def write(chosen: list[str], path: Path) -> None:
            # the dynamic quantizer splits a Gemm into "<name>_MatMul" + "<name>_Add" before it
            # matches nodes_to_quantize against the names
            names = [*chosen, *(f"{name}_MatMul" for name in chosen)]
            with quiet_onnxruntime():
                quantize_dynamic(str(prepared), str(path), per_channel=True, weight_type=QuantType.QInt8, nodes_to_quantize=names)

        return largest_first(
            layers,
            write,
            embed=lambda path, images: onnx_embedder(path)(images),
            float_path=prepared,
            out_path=Path(out_path),
            validation=validation,
            cos_mean_target=cos_mean_target,
        )


def quantize_static_int8(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    method: str,
    input_name: str = "image",
    nodes_to_exclude: list[str] | None = None,
) -> Path:
    """QDQ int8: per-channel symmetric int8 weights, uint8 activations with calibrated ranges;
    the nodes named in `nodes_to_exclude` stay in float (mixed precision), and so does the final
    L2 normalisation (see docemb.model.L2Normalize)."""
    with tempfile.TemporaryDirectory() as work, atomic_path(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)
        normalization = [n.name for n in onnx.load(str(prepared)).graph.node if n.name.startswith(L2_NORMALIZE_SCOPE)]
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
                nodes_to_exclude=[*(nodes_to_exclude or []), *normalization],
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
