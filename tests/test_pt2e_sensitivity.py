"""The cost of each layer's int8 activations in the PT2E graph int8 TFLite files are written from."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")

from docemb.evaluation import cosine_drift  # noqa: E402
from docemb.litert import tflite_embedder  # noqa: E402
from docemb.quantize.calibration import calibration_inputs  # noqa: E402
from docemb.quantize.pt2e import fake_quantized_graph, to_layout  # noqa: E402
from docemb.quantize.pt2e_sensitivity import INPUT, activation_quantizers_by_layer, layer_costs  # noqa: E402
from docemb.quantize.tflite import quantize_tflite  # noqa: E402


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


def test_the_layer_an_outlier_channel_makes_costly_is_one_that_carries_it(trained_model, synth_train):
    """One channel of a pointwise conv made 200x larger (and the model with it, so float is the
    reference) stretches the per-tensor int8 range of every tensor that carries it: that layer's
    output, and the next block's depthwise conv (channel by channel) and pointwise conv (which
    mixes it into all its outputs); the rounding of the conv's own input is amplified with it.
    The layer whose cost rises the most is one of them. (Which layer costs most outright depends
    on the trained model, which differs from CPU to CPU: compare with the model as trained.)"""
    preprocessing = trained_model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 8, offset=0)
    validation = calibration_inputs([synth_train], preprocessing, 8, offset=1, seed=1)
    _, before = layer_costs(trained_model, calibration, validation, "NHWC", float_front_stride=8)
    model = copy.deepcopy(trained_model)
    norm = model.get_submodule("backbone.blocks.3.0.bn2")
    with torch.no_grad():
        norm.weight[0] *= 200
        norm.bias[0] *= 200
    all_int8, costs = layer_costs(model, calibration, validation, "NHWC", float_front_stride=8)
    gain_before = {c.layer: c.gain_mean for c in before}
    rise = max(costs, key=lambda c: c.gain_mean - gain_before[c.layer])
    carriers = {f"backbone.blocks.3.0.{name}" for name in ("bn1.act", "conv_pw", "bn2.act")}
    carriers |= {f"backbone.blocks.3.1.{name}" for name in ("conv_dw", "bn1.act", "conv_pw", "bn2.act")}
    assert rise.layer in carriers
    assert rise.gain_min > 0 and rise.drift["cos_min"] > all_int8["cos_min"]
    assert not any(c.layer.startswith(("backbone.blocks.0.", "backbone.conv_stem")) for c in costs)  # the float front


@pytest.mark.slow  # converts the graph per layer
def test_the_graph_measured_is_the_tflite_file_up_to_integer_arithmetic(trained_model, synth_train, tmp_path):
    """Costs are measured in the fake-quantized graph, so it must compute what the post-training
    .tflite computes: closer to the file than to float. (How much closer depends on the CPU that
    trained the test model and runs XNNPACK: file to graph 0.2x the file's own int8 error on an
    Intel Xeon, 1.4x on an AMD EPYC, where the graph drifts from float twice as far as the file.)"""
    preprocessing = trained_model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 8, offset=0)
    probe = calibration_inputs([synth_train], preprocessing, 8, offset=1, seed=1)
    file_embeddings = tflite_embedder(quantize_tflite(trained_model, tmp_path / "m.tflite", calibration, float_front_stride=0))(
        probe
    )
    graph, _, _ = fake_quantized_graph(trained_model, calibration, "NHWC", float_front_stride=0)
    with torch.no_grad():
        simulated = graph(to_layout(probe, "NHWC")).numpy()
        reference = trained_model.eval()(torch.from_numpy(probe)).numpy()
    graph_int8_error = 1 - cosine_drift(reference, simulated)["cos_mean"]
    simulation_error = 1 - cosine_drift(file_embeddings, simulated)["cos_mean"]
    assert simulation_error < graph_int8_error  # integer rounding differs from fake-quantize in places


def test_no_diagnosis_asked_measures_nothing_and_clears_an_earlier_report(tmp_path, monkeypatch):
    """`--no-diagnose` (make export-int8) skips the per-layer cost, which takes minutes for full
    integer, and leaves no report of an earlier run beside the new file."""
    from types import SimpleNamespace

    from docemb.quantize import pt2e_sensitivity
    from docemb.quantize.run import QuantizeOptions
    from docemb.quantize.run_tflite import _diagnose
    from docemb.quantize.sensitivity import DriftTarget

    def measured(*args, **kwargs):
        raise AssertionError("layer costs measured")

    monkeypatch.setattr(pt2e_sensitivity, "layer_costs", measured)
    path = tmp_path / "model_int8_full.tflite"
    stale = tmp_path / "model_int8_full.tflite.layers.json"
    stale.write_text("{}")
    job = SimpleNamespace(
        options=QuantizeOptions(model=str(path), diagnose=False),
        target=DriftTarget(),
        calibration=None,
        validation=[],
        contract={"input": {"layout": "NHWC"}},
    )
    _diagnose(job, model=None, path=path, drift={"cos_mean": 0.5, "cos_min": 0.1}, float_front=0)
    assert not stale.exists()
    job.options = QuantizeOptions(model=str(path), diagnose=True)
    with pytest.raises(AssertionError, match="layer costs measured"):  # a miss is diagnosed by default
        _diagnose(job, model=None, path=path, drift={"cos_mean": 0.5, "cos_min": 0.1}, float_front=0)
