"""PyTorch -> TFLite with litert-torch, float32 or float16 weights.

Chosen over ONNX -> onnx2tf by measurement (README, "TFLite"): litert-torch converts straight
from the module in ~7 s without TensorFlow (+0.4 GB installed, against +2 GB), matches torch
to 2e-7, and its int8 path (PT2E, docemb.quantize.tflite) starts from the same module, so
float and int8 graphs come from one route.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from docemb.atomic import atomic_path
from docemb.edge_model import Layout, edge_model, sample_input
from docemb.embedders import torch_embedder
from docemb.errors import DocembError
from docemb.litert import convert, quiet_conversion, tflite_embedder
from docemb.model import EmbeddingModel
from docemb.preprocess import Preprocessing

TOLERANCE = {"float32": 1e-4, "float16": 5e-3}
Precision = Literal["float32", "float16"]


def cast_weights_float16(float32_path: Path, path: Path) -> Path:
    """float32 .tflite -> the same graph with float16 weights (DEQUANTIZE to float32 at load),
    half the size; XNNPACK computes in float32 as before."""
    from ai_edge_quantizer import quantizer

    recipe = [
        {
            "regex": ".*",
            "operation": "*",
            "algorithm_key": "float_casting",
            "op_config": {
                "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                "compute_precision": "FLOAT",
                "explicit_dequantize": True,
            },
        }
    ]
    tool = quantizer.Quantizer(str(float32_path))
    tool.load_quantization_recipe(recipe)
    with atomic_path(path) as tmp, quiet_conversion():
        tool.quantize().export_model(str(tmp), overwrite=True)
    return path


def export_tflite(
    model: EmbeddingModel,
    path: str | os.PathLike,
    precision: Precision = "float32",
    layout: Layout = "NHWC",
    builtin_normalization: bool = False,
) -> Path:
    """Write `model` as a batch-1 .tflite at `path`; see docemb.edge_model for the graph rewrites."""
    path = Path(path)
    if precision not in TOLERANCE:
        raise DocembError(f"unknown TFLite precision {precision!r}; choose float32 or float16")
    normalization = model.preprocessing if builtin_normalization else None
    module = edge_model(model, layout=layout, builtin_normalization=normalization)
    sample = sample_input(model.config.input_size, layout)
    if precision == "float32":
        return convert(module, sample, path)
    float32_path = path.with_name(path.stem + ".float32.tmp.tflite")
    try:
        convert(module, sample, float32_path)
        return cast_weights_float16(float32_path, path)
    finally:
        float32_path.unlink(missing_ok=True)


def verify_tflite(
    model: EmbeddingModel, path: str | os.PathLike, inputs: np.ndarray, precision: Precision, builtin: Preprocessing | None
) -> float:
    """Largest |torch - tflite| over `inputs` (NCHW, normalised); raises past the precision's tolerance."""
    reference = torch_embedder(model)(inputs)
    exported = tflite_embedder(path, threads=1, builtin_normalization=builtin)(inputs)
    difference = float(np.abs(reference - exported).max())
    if not difference < TOLERANCE[precision]:
        raise DocembError(f"{path}: embeddings differ from torch by {difference:.2e} (limit {TOLERANCE[precision]:.0e})")
    return difference
