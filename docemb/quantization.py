"""The record of how an int8 file was made: the contract's `quantization` field, its model card's
Quantization section and the rows of `quantize_report.json`, in one typed form."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

from docemb.formats import GraphKind

Drift = dict[str, float]  # docemb.evaluation.cosine_drift: cos_mean, cos_min, ...


@dataclass
class Calibration:
    method: str  # minmax | entropy | percentile (onnxruntime) or histogram (PT2E)
    images: int
    folders: list[str]
    compared: dict[str, Drift] | None = None  # onnxruntime: every method tried, with its drift


@dataclass
class FineTune:
    """A quantization-aware fine-tune and whether its file replaced the post-training one."""

    steps: int
    lr: float
    batch_size: int
    images: int
    loss: str
    post_training_drift: Drift
    fine_tuned_drift: Drift
    kept: bool


@dataclass
class QuantizationRecord:
    graph: GraphKind
    scheme: str
    weights: str
    activations: str
    drift: Drift | None = None
    drift_target: dict[str, float] | None = None
    drift_validation_images: int | None = None
    calibration: Calibration | None = None
    qat: FineTune | None = None
    int8_weight_share: float | None = None  # dynamic: the share of weights in int8 layers
    float_nodes: list[dict] | None = None  # ONNX: layers kept in float (name, op_type)
    float_front: list[str] | None = None  # modules before the int8 part (docemb.edge_model)
    xnnpack_partitions: int | None = None
    not_delegated: list[str] | None = None
    float_ops: dict[str, int] | None = None

    def to_dict(self) -> dict:
        """The contract's JSON form; unset fields are left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict) -> QuantizationRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("graph", _graph_of_older_contract(data))
        if isinstance(values.get("calibration"), dict):
            values["calibration"] = Calibration(**values["calibration"])
        if isinstance(values.get("qat"), dict):
            values["qat"] = FineTune(**values["qat"])
        return cls(**values)


def _graph_of_older_contract(data: dict) -> GraphKind:
    """Contracts written before the graph kind was recorded said it in the scheme only."""
    scheme = data.get("scheme", "")
    if scheme.startswith("onnxruntime dynamic"):
        return "ort-dynamic"
    if scheme.startswith("onnxruntime static"):
        return "ort-qdq"
    if scheme.startswith("PT2E"):
        return "pt2e-qdq"
    if "full-integer" in scheme:
        return "litert-full"
    return "litert-dynamic" if "dynamic" in scheme else "litert-static"


@dataclass
class QuantizedFile:
    """One file `docemb quantize` wrote."""

    kind: str  # the --include word
    path: Path
    record: QuantizationRecord
    size_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.size_bytes = self.path.stat().st_size

    def report_row(self) -> dict:
        return {"file": self.path.name, "size_bytes": self.size_bytes, **self.record.to_dict()}
