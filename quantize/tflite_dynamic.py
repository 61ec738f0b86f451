"""Dynamic int8 .tflite from the float .tflite: int8 weights, activations quantized at run time,
layers chosen largest first while the mean cosine holds (docemb.quantize.dynamic).

litert-torch's dynamic path quantizes every conv and linear and ignores the quantizer's module
filters, so the depthwise convolutions went int8 too: XNNPACK leaves them out of its graph, and
on the shipped model they alone carried the drift (docs/quantization.md). AI Edge Quantizer
rewrites the float file instead and takes a recipe per op: only the ops chosen here become
dynamic int8.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from docemb.errors import DocembError
from docemb.litert import quiet_conversion, tflite_embedder
from docemb.quantize.dynamic import DynamicChoice, WeightedLayer, largest_first

# op -> depthwise: XNNPACK leaves dynamic int8 depthwise convolutions out of its graph
WEIGHTED_OPS = {"CONV_2D": False, "FULLY_CONNECTED": False, "DEPTHWISE_CONV_2D": True}


def weighted_ops(path: Path) -> list[WeightedLayer]:
    """Every conv and fully connected op of a float .tflite with a constant weight, named by its
    scope (its output tensors, as AI Edge Quantizer's recipes match them), largest first."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils.tfl_flatbuffer_utils import get_op_scope

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(Path(path).read_bytes(), 0))
    graph = model.subgraphs[0]
    op_names = {getattr(schema.BuiltinOperator, name): name for name in WEIGHTED_OPS}
    layers = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        op_type = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        weight = graph.tensors[op.inputs[1]] if op_type and len(op.inputs) > 1 else None
        if weight is not None and holds_data(model.buffers[weight.buffer]):
            scope = get_op_scope(op, graph.tensors)
            layers.append(WeightedLayer(scope, op_type, int(np.prod(weight.shape)), WEIGHTED_OPS[op_type]))
    return sorted(layers, key=lambda layer: -layer.parameters)


def holds_data(buffer) -> bool:
    """Whether a flatbuffer buffer holds a constant: inline, or past the flatbuffer (offset and
    size, as AI Edge Quantizer writes them)."""
    return buffer.data is not None or bool(buffer.size)


def write_dynamic(float_path: Path, scopes: list[str], path: Path) -> None:
    """The float file with the ops of these scopes in dynamic int8 (weights per channel)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager

    recipes = recipe_manager.RecipeManager()
    for scope in scopes:
        recipes.add_dynamic_config(
            regex=f"^{re.escape(scope)}$", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8
        )
    Path(path).unlink(missing_ok=True)  # export_model warns on every file it overwrites
    tool = quantizer.Quantizer(str(float_path))
    tool.load_quantization_recipe(recipes.get_quantization_recipe())
    with quiet_conversion():
        tool.quantize().export_model(str(path), overwrite=True)


def quantize_dynamic_tflite(
    float_path: Path, out_path: Path, validation: np.ndarray | None = None, cos_mean_target: float = 0.998
) -> DynamicChoice:
    """Dynamic int8 `out_path` from the float .tflite; see the module's docstring."""
    layers = weighted_ops(float_path)
    if not any(not layer.depthwise for layer in layers):
        raise DocembError(f"{float_path}: no conv or fully connected op with a constant weight to quantize")
    return largest_first(
        layers,
        write=lambda scopes, path: write_dynamic(float_path, scopes, path),
        embed=lambda path, images: tflite_embedder(path)(images),
        float_path=Path(float_path),
        out_path=Path(out_path),
        validation=validation,
        cos_mean_target=cos_mean_target,
    )
