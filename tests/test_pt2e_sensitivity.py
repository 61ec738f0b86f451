"""The cost of each layer's int8 activations in the PT2E graph int8 TFLite files are written from."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")

from docemb.quantize.calibration import calibration_inputs  # noqa: E402
from docemb.quantize.pt2e import fake_quantized_graph  # noqa: E402
from docemb.quantize.pt2e_sensitivity import INPUT, activation_quantizers_by_layer, layer_costs  # noqa: E402


def test_every_activation_quantizer_belongs_to_one_layer_of_the_model(trained_model, synth_train):
    calibration = calibration_inputs([synth_train], trained_model.preprocessing, 4, offset=0)
    graph, _, _ = fake_quantized_graph(trained_model, calibration, "NHWC", float_front_stride=0)
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    modules = dict(graph.named_modules(remove_duplicate=False))
    quantized = {  # every fake-quantize by what it quantizes: an op's output, a weight or a constant
        id(modules[str(n.target)]): n.args[0].op
        for n in graph.graph.nodes
        if n.op == "call_module" and isinstance(modules[str(n.target)], FakeQuantizeBase)
    }
    layers = activation_quantizers_by_layer(graph)
    grouped = [id(q) for quantizers in layers.values() for q in quantizers]
    assert sorted(grouped) == sorted(i for i, op in quantized.items() if op != "get_attr")  # each activation once
    assert INPUT in layers  # full integer: the input is quantized too
    for name in set(layers) - {INPUT}:
        trained_model.get_submodule(name)  # a real module path of the checkpoint's model
    # a HardSwish written for XNNPACK, x * (relu6(x + 3) * 1/6), quantizes three tensors
    assert max(len(q) for q in layers.values()) == 3


def test_the_costliest_layer_is_the_one_with_an_outlier_channel(trained_model, synth_train):
    """One channel of a pointwise conv made 50x larger (and the model with it, so float is the
    reference) stretches that layer's per-tensor int8 range: its activations cost the most."""
    model = copy.deepcopy(trained_model)
    norm = model.get_submodule("backbone.blocks.3.0.bn2")
    with torch.no_grad():
        norm.weight[0] *= 50
        norm.bias[0] *= 50
    preprocessing = model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 8, offset=0)
    validation = calibration_inputs([synth_train], preprocessing, 8, offset=1, seed=1)
    all_int8, costs = layer_costs(model, calibration, validation, "NHWC", float_front_stride=8)
    assert costs[0].layer in {"backbone.blocks.3.0.conv_pw", "backbone.blocks.3.0.bn2.act"}
    assert costs[0].gain_min > 0 and costs[0].drift["cos_min"] > all_int8["cos_min"]
    assert not any(c.layer.startswith(("backbone.blocks.0.", "backbone.conv_stem")) for c in costs)  # the float front
