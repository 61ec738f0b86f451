"""Which layers int8 hurts, and a mixed-precision model that keeps the few worst in float.

Two measurements, both on the user's validation images:

- layer by layer: every activation of the float model against the same tensor in the QDQ model
  (onnxruntime's qdq_loss_debug). Its *own* error (SQNR of the tensor just before and just after
  its quantize-dequantize pair) names the tensors whose int8 range fits worst, independent of
  the errors that arrive from upstream;
- at the embedding: the cosine to float when a candidate layer is left in float, which is what
  a user's match scores feel.

`mixed_precision` walks the candidates from the worst own error down, keeps a layer in float
only if that measurably brings the embedding closer to float, and stops as soon as the drift
target is met.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization.qdq_loss_debug import (
    collect_activations,
    compute_activation_error,
    create_activation_matching,
    modify_model_output_intermediate_tensors,
)

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder
from docemb.evaluation import cosine_drift
from docemb.quantize.ort import ArrayReader, preprocess_for_quantization, quantize_static_int8, quiet_onnxruntime

MIN_GAIN = 1e-4  # a layer left in float must raise the mean cosine by at least this much


@dataclass(frozen=True)
class DriftTarget:
    cos_mean: float = 0.99
    cos_min: float = 0.97

    def met(self, drift: dict[str, float]) -> bool:
        return drift["cos_mean"] >= self.cos_mean and drift["cos_min"] >= self.cos_min


@dataclass
class LayerError:
    tensor: str
    node: str  # the node that produces the tensor: the one to keep in float
    op_type: str
    own_sqnr_db: float  # this tensor's quantization alone
    accumulated_sqnr_db: float  # against the float model, errors from upstream included


@dataclass
class MixedPrecision:
    drift_all_int8: dict[str, float]
    drift: dict[str, float]
    float_nodes: list[dict[str, str]] = field(default_factory=list)  # name and op type, in order kept
    trials: list[dict] = field(default_factory=list)  # every candidate tried and the drift it gave
    target_met: bool = False


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


def mixed_precision(
    float_path: str | os.PathLike,
    qdq_path: str | os.PathLike,
    errors: list[LayerError],
    calibration: np.ndarray,
    validation: np.ndarray,
    method: str,
    target: DriftTarget = DriftTarget(),
    max_float_nodes: int = 8,
    candidates: int = 16,
) -> MixedPrecision:
    """Starting from the all-int8 QDQ model at `qdq_path` and its layer `errors`, keep layers in
    float greedily (at most `max_float_nodes`, among the `candidates` worst) until `target` is
    met. Each kept step replaces `qdq_path` atomically, so it always holds the best model found.
    Returns what was kept in float, with the drift of every trial."""
    reference = onnx_embedder(float_path)(validation)
    drift = cosine_drift(reference, onnx_embedder(qdq_path)(validation))
    result = MixedPrecision(drift_all_int8=drift, drift=drift, target_met=target.met(drift))
    tried: set[str] = set()
    with tempfile.TemporaryDirectory() as work:
        for error in errors:
            if result.target_met or len(result.float_nodes) >= max_float_nodes or len(tried) >= candidates:
                break
            if error.node in tried:
                continue
            tried.add(error.node)
            excluded = [n["name"] for n in result.float_nodes] + [error.node]
            trial_path = Path(work) / "trial.onnx"
            quantize_static_int8(float_path, trial_path, calibration, method, nodes_to_exclude=excluded)
            trial = cosine_drift(reference, onnx_embedder(trial_path)(validation))
            kept = trial["cos_mean"] >= result.drift["cos_mean"] + MIN_GAIN
            result.trials.append({"node": error.node, "op_type": error.op_type, "drift": trial, "kept": kept})
            if kept:
                with atomic_path(qdq_path) as tmp:
                    os.replace(trial_path, tmp)
                result.float_nodes.append({"name": error.node, "op_type": error.op_type})
                result.drift = trial
                result.target_met = target.met(trial)
    return result
