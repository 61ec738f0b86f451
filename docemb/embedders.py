"""Run a model, whatever its format, as one function: NCHW float32 batch -> (N, D) embeddings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from docemb.errors import DocembError, first_line

if TYPE_CHECKING:
    import torch

    from docemb.preprocess import Preprocessing

Embedder = Callable[[np.ndarray], np.ndarray]


def torch_embedder(model: torch.nn.Module) -> Embedder:
    import torch  # here, not at the top: benchmark workers time ONNX/TFLite without paying for torch

    model = model.eval()
    device = next(model.parameters()).device

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


# what onnxruntime raises for a file it cannot run (none derives from a common base but Exception)
ORT_LOAD_ERRORS = (
    "InvalidProtobuf",
    "InvalidGraph",
    "NotImplemented",
    "Fail",
    "NoSuchFile",
    "InvalidArgument",
    "RuntimeException",
)


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """An onnxruntime session, or a DocembError naming the file when onnxruntime cannot load it
    (truncated or not a model, an opset or op it lacks)."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(Path(path)), options, providers=["CPUExecutionProvider"])
    except tuple(getattr(state, name) for name in ORT_LOAD_ERRORS) as exc:
        raise DocembError(f"{path}: onnxruntime cannot load it: {first_line(exc)}") from None


def model_embedder(path: str | os.PathLike, threads: int = 1) -> Embedder:
    """The embedder for an exported file, by its suffix; .tflite reads its contract to know
    whether normalisation is built in."""
    if str(path).endswith(".tflite"):
        from docemb.contract import builtin_normalization, read_contract
        from docemb.litert import tflite_embedder

        return tflite_embedder(path, threads, builtin_normalization=builtin_normalization(read_contract(path)))
    return onnx_embedder(path, threads)


def onnx_embedder(path: str | os.PathLike, threads: int = 1) -> Embedder:
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: batch})[0]

    return run


def load_embedder(path: str | os.PathLike, threads: int | None = None) -> tuple[Embedder, Preprocessing]:
    """Any model docemb makes, by its suffix: a .safetensors checkpoint (run in torch) or an
    exported .onnx / .tflite (preprocessing from the contract beside it)."""
    from docemb.preprocess import Preprocessing  # noqa: F811  (at run time; the top import is for type checkers)

    path = Path(path)
    threads = threads or os.cpu_count() or 1
    if path.suffix == ".safetensors":
        import torch

        from docemb.model import load_model

        torch.set_num_threads(threads)
        model = load_model(path)
        return torch_embedder(model), model.preprocessing
    from docemb.contract import read_contract

    return model_embedder(path, threads), Preprocessing.from_dict(read_contract(path)["preprocessing"])
