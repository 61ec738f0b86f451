"""The float model as ONNX (docemb.torch_to_onnx: legacy exporter, opset 17), simplified and
checked against PyTorch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder, torch_embedder
from docemb.errors import DocembError
from docemb.fold import fold_head_batchnorm
from docemb.model import EmbeddingModel
from docemb.torch_to_onnx import export_legacy

TOLERANCE = 1e-4


def export_onnx(model: EmbeddingModel, path: str | os.PathLike, simplify: bool = True) -> Path:
    """Write `model` (eval mode, dynamic batch) to `path` with the head's BatchNorm1d folded
    into the layers before them (docemb.fold), simplified and checked."""
    path = Path(path)
    model, _ = fold_head_batchnorm(model.eval())
    size = model.config.input_size
    dummy = torch.zeros(2, 3, size, size)
    with atomic_path(path) as tmp:
        export_legacy(model, dummy, tmp)
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
