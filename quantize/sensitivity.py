"""Which layers int8 hurts, and a mixed-precision model that keeps the few worst in float.

Two measurements, both on the user's validation images:

- layer by layer (docemb.layer_drift.layer_errors): each layer's own int8 error, which names
  the tensors whose int8 range fits worst;
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

from docemb.atomic import atomic_path
from docemb.embedders import onnx_embedder
from docemb.evaluation import cosine_drift
from docemb.layer_drift import LayerError
from docemb.quantize.ort import quantize_static_int8

MIN_GAIN = 1e-4  # a layer left in float must raise the mean cosine by at least this much


@dataclass(frozen=True)
class DriftTarget:
    cos_mean: float = 0.99
    cos_min: float = 0.97

    def met(self, drift: dict[str, float]) -> bool:
        return drift["cos_mean"] >= self.cos_mean and drift["cos_min"] >= self.cos_min

    def better(self, drift: dict[str, float], than: dict[str, float]) -> bool:
        """Whether a file drifting `drift` should replace one drifting `than`: the target met
        where it was not, else a higher minimum cosine."""
        return (self.met(drift), drift["cos_min"]) > (self.met(than), than["cos_min"])


@dataclass
class MixedPrecision:
    drift_all_int8: dict[str, float]
    drift: dict[str, float]
    float_nodes: list[dict[str, str]] = field(default_factory=list)  # name and op type, in order kept
    trials: list[dict] = field(default_factory=list)  # every candidate tried and the drift it gave
    target_met: bool = False


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
