"""PyTorch -> ONNX through the legacy TorchScript exporter at opset 17.

The dynamo exporter always writes opset 18 and needs onnxscript; the opset-17 graph from the
legacy exporter is the one onnxruntime's quantization tools and onnx2tf handle best.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder, torch_embedder
from docemb.errors import DocembError
from docemb.fold import fold_head_batchnorm
from docemb.model import EmbeddingModel

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
TOLERANCE = 1e-4


def export_onnx(model: EmbeddingModel, path: str | os.PathLike, simplify: bool = True) -> Path:
    """Write `model` (eval mode, dynamic batch) to `path` with the head's BatchNorm1d folded
    into the layers before them (docemb.fold), simplified and checked."""
    path = Path(path)
    model, _ = fold_head_batchnorm(model.eval())
    size = model.config.input_size
    dummy = torch.zeros(2, 3, size, size)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        graph = onnx.load(str(tmp))
        if simplify:
            import onnxslim

            graph = onnxslim.slim(graph)
        onnx.checker.check_model(graph, full_check=True)
        onnx.save(graph, str(tmp))
    return path


def max_abs_difference(model: EmbeddingModel, onnx_path: str | os.PathLike, inputs: np.ndarray) -> float:
    """Largest elementwise difference between torch and onnxruntime embeddings of `inputs`."""
    reference = torch_embedder(model)(inputs)
    exported = onnx_embedder(onnx_path, threads=1)(inputs)
    return float(np.abs(reference - exported).max())


def verify_onnx(model: EmbeddingModel, onnx_path: str | os.PathLike, inputs: np.ndarray) -> float:
    """Raise if the ONNX model's embeddings differ from torch's by TOLERANCE or more."""
    difference = max_abs_difference(model, onnx_path, inputs)
    if not difference < TOLERANCE:
        raise DocembError(f"{onnx_path}: embeddings differ from torch by {difference:.2e} (limit {TOLERANCE:.0e})")
    return difference
