"""Per-layer drift of an int8 QDQ ONNX model against its float model, tensor by tensor.

Every activation of the float model is compared with the same tensor in the QDQ model on the
same inputs (onnxruntime's qdq_loss_debug). A tensor's *own* error (SQNR just before and just
after its quantize-dequantize pair) names the layers whose int8 range fits worst, independent
of the errors that arrive from upstream; the *accumulated* error includes them. `docemb
quantize` uses it to pick layers to keep in float, `docemb bench --layer-drift` to report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)
from onnxruntime.quantization.shape_inference import quant_pre_process


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


@dataclass
class LayerError:
    tensor: str
    node: str  # the node that produces the tensor: the one to keep in float
    op_type: str
    own_sqnr_db: float  # this tensor's quantization alone
    accumulated_sqnr_db: float  # against the float model, errors from upstream included


def layer_errors(
    float_path: str | os.PathLike, qdq_path: str | os.PathLike, inputs: np.ndarray, input_name: str = "image"
) -> list[LayerError]:
    """Per-activation SQNR of `qdq_path` against `float_path` on `inputs`, worst own error first."""
    with tempfile.TemporaryDirectory() as work, quiet_onnxruntime():
        work = Path(work)
        prepared = work / "prepared.onnx"
        preprocess_for_quantization(float_path, prepared)  # the graph the quantizer saw: same names
        activations = {}
        for name, path in (("float", prepared), ("qdq", Path(qdq_path))):
            augmented = work / f"{name}_augmented.onnx"
            modify_model_output_intermediate_tensors(str(path), str(augmented))
            activations[name] = collect_activations(str(augmented), ArrayReader(input_name, inputs))
        producers = {out: node for node in onnx.load(str(prepared)).graph.node for out in node.output}
    matching = create_activation_matching(activations["qdq"], activations["float"])
    errors = []
    for tensor, error in compute_activation_error(matching).items():
        node = producers.get(tensor)
        if node is None:  # the model input: nothing to keep in float
            continue
        errors.append(
            LayerError(tensor, node.name, node.op_type, float(error["qdq_err"]), float(error.get("xmodel_err", np.nan)))
        )
    return sorted(errors, key=lambda e: e.own_sqnr_db)
