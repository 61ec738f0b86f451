"""Which layers of the PT2E int8 graph cost the most drift, for int8 TFLite.

An int8 .tflite keeps no float tensors to compare layer by layer (docemb.layer_drift does that
for ONNX), so the measurement happens in the torch graph the file is written from: the graph's
fake-quantize modules at the post-training ranges, one layer's activation quantizers switched
off at a time (its outputs stay float, every other layer int8), and the embedding's cosine to
the float model measured on validation images. A layer whose float outputs lift the worst
cosine most is the one that costs the most.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from docemb.edge_model import Layout
from docemb.embedders import torch_embedder
from docemb.evaluation import cosine_drift
from docemb.model import EmbeddingModel
from docemb.quantize.pt2e import fake_quantized_graph, quiet_imports, to_layout

BATCH = 64
INPUT = "input"  # the name of the graph input's quantizer (full integer only)


@dataclass(frozen=True)
class LayerCost:
    layer: str  # the torch module path (docemb's model, as the checkpoint names it), or "input"
    quantizers: int  # activation quantizers the layer owns (a HardSwish written for XNNPACK has three)
    drift: dict[str, float]  # cosine to float with this layer's activations in float, the rest int8
    gain_mean: float  # over all-int8, in cosine
    gain_min: float


def layer_costs(
    model: EmbeddingModel, calibration: np.ndarray, validation: np.ndarray, layout: Layout, float_front_stride: int
) -> tuple[dict[str, float], list[LayerCost]]:
    """The all-int8 drift of the static graph (float front up to `float_front_stride`; 0 for
    full integer) on `validation`, and every layer's cost, the one whose float outputs raise
    the minimum cosine most first."""
    reference = torch_embedder(model)(validation)
    graph, _, _ = fake_quantized_graph(model, calibration, layout, float_front_stride)
    layers = activation_quantizers_by_layer(graph)
    all_int8 = cosine_drift(reference, _embed(graph, validation, layout))
    costs = []
    for layer, quantizers in tqdm(layers.items(), desc="int8 cost per layer", unit="layer", leave=False):
        for quantizer in quantizers:
            quantizer.disable_fake_quant()
        drift = cosine_drift(reference, _embed(graph, validation, layout))
        for quantizer in quantizers:
            quantizer.enable_fake_quant()
        gains = drift["cos_mean"] - all_int8["cos_mean"], drift["cos_min"] - all_int8["cos_min"]
        costs.append(LayerCost(layer, len(quantizers), drift, *gains))
    return all_int8, sorted(costs, key=lambda c: (c.gain_min, c.gain_mean), reverse=True)


def activation_quantizers_by_layer(graph: torch.fx.GraphModule) -> dict[str, list[torch.nn.Module]]:
    """The graph's activation fake-quantize modules, each once, grouped by the module that
    produces the tensor they quantize (first use); those of weights and constants are left out."""
    with quiet_imports():
        from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    # ops that share a range (a reshape and its input) share one module under two names
    modules = dict(graph.named_modules(remove_duplicate=False))
    layers: dict[str, list[torch.nn.Module]] = defaultdict(list)
    seen: set[int] = set()
    for node in graph.graph.nodes:
        quantizer = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(quantizer, FakeQuantizeBase) or node.args[0].op == "get_attr" or id(quantizer) in seen:
            continue  # a weight or a constant (HardSwish's 1/6) is not an activation
        seen.add(id(quantizer))
        layers[_producer(node.args[0])].append(quantizer)
    return dict(layers)


def _producer(node: torch.fx.Node) -> str:
    """The module path of the op that computes `node`, as docemb's model names it; the input
    and ops outside the model (docemb.edge_model's layout change of the input) are INPUT."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    if node.op == "placeholder" or path in ("", "model"):
        return INPUT
    return path.removeprefix("model.")  # docemb.edge_model wraps the model as `model`


def _embed(module: torch.nn.Module, inputs: np.ndarray, layout: Layout) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([module(to_layout(inputs[i : i + BATCH], layout)) for i in range(0, len(inputs), BATCH)]).numpy()
