"""Operator inventory: every op of a model with its dtypes and the layer it comes from, and
whether each phone runtime would take it.

TFLite: XNNPACK, the GPU delegate and NNAPI, from support tables kept as data files beside
this module (`support/*.json`, each naming its source and version), next to what XNNPACK did
on this host (docemb.litert.delegation). ONNX: onnxruntime's own mobile usability checker for
the NNAPI and CoreML execution providers, with the batch dimension fixed to 1 as on a phone,
and the graph onnxruntime's CPU provider runs on this host after its fusions.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from docemb.errors import DocembError

SUPPORT_DIR = Path(__file__).parent / "support"
# Ops that only move data between the delegate and the CPU; never counted as unsupported.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class OpRecord:
    """One operator as the file has it."""

    index: int
    op: str
    input_dtypes: tuple[str, ...]
    output_dtype: str
    quantized: bool
    layer: str

    @property
    def dtype_class(self) -> str:
        """What support tables key on: the output dtype, or 'hybrid' for a float op fed int8
        weights (dynamic-range int8), which delegates treat apart."""
        if self.output_dtype in ("float32", "float16") and self.op not in BOUNDARY_OPS:
            if any(d in ("int8", "uint8") for d in self.input_dtypes):
                return "hybrid"
        return self.output_dtype


@dataclass(frozen=True)
class SupportTable:
    """Which (op, dtype) pairs a delegate takes, as its source documents it."""

    delegate: str
    source: str
    version: str
    ops: dict[str, list[str]]
    notes: dict[str, str] = field(default_factory=dict)

    def takes(self, record: OpRecord) -> bool:
        return record.dtype_class in self.ops.get(record.op, [])


def load_support_tables(folder: Path = SUPPORT_DIR) -> list[SupportTable]:
    tables = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            tables.append(SupportTable(data["delegate"], data["source"], data["version"], data["ops"], data.get("notes", {})))
        except (json.JSONDecodeError, KeyError) as exc:
            raise DocembError(f"{path}: not a support table ({exc.__class__.__name__}: {exc})") from None
    return tables


def layer_from_tensor_name(name: str) -> str:
    """litert-torch names a tensor by the module path that made it, one `package.Class_attribute`
    segment per level ('.../timm...DepthwiseSeparableConv_0/torch.nn.modules.conv.Conv2d_conv_dw;2');
    the attribute names joined are the torch module path ('backbone.0.0.conv_dw')."""
    first = name.split(";")[0]
    attributes = []
    for segment in first.split("/"):
        class_and_attribute = segment.rsplit(".", 1)[-1]
        if "_" in class_and_attribute:
            attributes.append(class_and_attribute.split("_", 1)[1])
    if attributes[:1] == ["model"]:  # docemb.edge_model.EdgeInput wraps the model as .model
        attributes = attributes[1:]
    return ".".join(attributes) or "(top level: the L2 normalisation)"


def tflite_inventory(path: str | os.PathLike) -> list[OpRecord]:
    from docemb.litert import model_ops

    return [
        OpRecord(
            index=int(op["index"]),
            op=op["op_name"],
            input_dtypes=tuple(np.dtype(t["dtype"]).name for t in inputs),
            output_dtype=np.dtype(output["dtype"]).name if output else "?",
            quantized=bool(output and output["quantization"][0]),
            layer=layer_from_tensor_name(output["name"]) if output else "",
        )
        for op, inputs, output in model_ops(path)
    ]


def onnx_inventory(path: str | os.PathLike) -> list[OpRecord]:
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    dtypes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dtypes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    for initializer in model.graph.initializer:
        dtypes[initializer.name] = onnx.helper.tensor_dtype_to_np_dtype(initializer.data_type).name
    return [
        OpRecord(
            index=index,
            op=node.op_type,
            input_dtypes=tuple(dtypes.get(name, "?") for name in node.input if name),
            output_dtype=dtypes.get(node.output[0], "?"),
            quantized=any(dtypes.get(name) in ("int8", "uint8") for name in [*node.input, *node.output]),
            layer=node.name,
        )
        for index, node in enumerate(model.graph.node)
    ]


def inventory(path: str | os.PathLike) -> list[OpRecord]:
    return tflite_inventory(path) if str(path).endswith(".tflite") else onnx_inventory(path)


def op_summary(records: list[OpRecord]) -> dict[str, int]:
    """'OP dtype' -> count, most frequent first."""
    return dict(Counter(f"{r.op} {r.output_dtype}" for r in records).most_common())


def delegate_support(records: list[OpRecord], tables: list[SupportTable]) -> dict[str, dict]:
    """Per delegate: how many ops it takes, and each op it would leave on the CPU (or fail on),
    with the layer it comes from."""
    result = {}
    for table in tables:
        left = [r for r in records if r.op not in BOUNDARY_OPS and not table.takes(r)]
        result[table.delegate] = {
            "source": table.source,
            "version": table.version,
            "ops_total": len(records),
            "ops_supported": len(records) - len(left),
            "unsupported": [
                {"op": r.op, "dtype": r.dtype_class, "layer": r.layer, "note": table.notes.get(r.op, "")} for r in left
            ],
        }
    return result


def onnx_ep_coverage(path: str | os.PathLike) -> dict[str, dict]:
    """onnxruntime's mobile usability checker (the code behind
    `python -m onnxruntime.tools.check_onnx_model_mobile_usability`) for NNAPI and CoreML,
    on the model with its batch fixed to 1 and basic optimisations applied, as ORT Mobile runs it."""
    import onnx
    from onnxruntime.tools import onnx_model_utils
    from onnxruntime.tools.mobile_helpers import usability_checker

    def coreml(filename: str):
        return lambda model: usability_checker.check_coreml_partitions(model, False, filename)

    checkers = {
        "NNAPI": lambda model: usability_checker.check_nnapi_partitions(model, False),
        "CoreML NeuralNetwork": coreml("coreml_supported_neuralnetwork_ops.md"),
        "CoreML MLProgram": coreml("coreml_supported_mlprogram_ops.md"),
    }
    logging.getLogger("usability_checker").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        fixed, optimized = Path(tmp) / "fixed.onnx", Path(tmp) / "optimized.onnx"
        model = onnx.load(str(path))
        for value in model.graph.input:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    onnx_model_utils.make_dim_param_fixed(model.graph, dim.dim_param, 1)
        onnx_model_utils.fix_output_shapes(model)
        onnx.save(model, str(fixed))
        onnx_model_utils.optimize_model(fixed, optimized)
        with_shapes = onnx_model_utils.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        coverage = {}
        for name, check in checkers.items():
            info = check(with_shapes)
            unsupported = sorted(op.split(":")[-1] for op in info.unsupported_ops)
            coverage[name] = {
                "partitions": info.num_partitions,
                "nodes_supported": info.num_supported_nodes,
                "nodes_total": info.num_nodes,
                "unsupported_ops": unsupported,
                "unsupported_layers": {op: [n.name for n in with_shapes.graph.node if n.op_type == op] for op in unsupported},
                "suitability": info.suitability().name,
            }
    return coverage


QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def onnx_cpu_graph(path: str | os.PathLike) -> dict:
    """The graph onnxruntime's CPU provider runs after its fusions (extended level, as sessions
    default to more): op counts, and the ops left computing in float between a DequantizeLinear
    and the next QuantizeLinear. For QDQ models these are the int8 path's extra passes over the
    activations, which is why int8 can run slower than a float graph whose activations are
    fused into the convolutions."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    dequantized = [
        node.op_type
        for node in graph.node
        if node.op_type not in QDQ_OPS and any(producers.get(name) == "DequantizeLinear" for name in node.input)
    ]
    return {
        "ops": dict(Counter(node.op_type for node in graph.node).most_common()),
        "float_between_qdq": dict(Counter(dequantized)),
    }


def operator_report(path: str | os.PathLike, tables: list[SupportTable] | None = None) -> dict:
    """Everything bench says about a model's operators, as plain data."""
    records = inventory(path)
    report: dict = {"ops": op_summary(records), "inventory": [asdict(r) for r in records]}
    if str(path).endswith(".tflite"):
        from docemb.litert import delegation

        observed = delegation(path)
        report["delegates"] = delegate_support(records, load_support_tables() if tables is None else tables)
        report["xnnpack_on_host"] = {"partitions": observed.partitions, "not_delegated": observed.ops_left_out}
    else:
        report["execution_providers"] = onnx_ep_coverage(path)
        report["cpu_graph_on_host"] = onnx_cpu_graph(path)
    return report
