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
from docemb.evaluation import cosine_drift
from docemb.layer_drift import ArrayReader, preprocess_for_quantization, quiet_onnxruntime

L2_NORMALIZE_SCOPE = "/normalize/"  # the ONNX node names of EmbeddingModel.normalize
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}


def quantize_dynamic_int8(float_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """int8 weights (per channel), activations quantized on the fly at run time."""
    with tempfile.TemporaryDirectory() as work, atomic_path(out_path) as tmp:
        prepared = Path(work) / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)
        with quiet_onnxruntime():
            quantize_dynamic(str(prepared), str(tmp), per_channel=True, weight_type=QuantType.QInt8)
    return Path(out_path)


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
