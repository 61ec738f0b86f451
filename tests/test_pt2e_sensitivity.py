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


def test_the_layer_an_outlier_channel_makes_costly_is_the_one_that_carries_it(trained_model, synth_train):
    """One channel of the first squeeze-excite's reduced vector made 1000x its peak (and cut from
    the expand conv, so no later tensor carries it) stretches that one per-tensor int8 range until
    the other channels round to zero. Only that layer's quantizer carries the outlier, so turning
    it off alone gives back what the perturbation cost, and the report names it first. (An outlier
    in the main path is carried by several tensors in a row: turning off any one of them gives
    back little, and which then ranks first depends on the CPU that trained the model.)"""
    preprocessing = trained_model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 8, offset=0)
    validation = calibration_inputs([synth_train], preprocessing, 8, offset=1, seed=1)
    before, _ = layer_costs(trained_model, calibration, validation, "NHWC", float_front_stride=8)
    se = "backbone.blocks.5.0.se"
    reduced = []
    hook = trained_model.get_submodule(f"{se}.act1").register_forward_hook(lambda m, i, o: reduced.append(o.clone()))
    with torch.no_grad():
        trained_model.eval()(torch.from_numpy(calibration))
    hook.remove()
    model = copy.deepcopy(trained_model)
    with torch.no_grad():
        model.get_submodule(f"{se}.conv_reduce").bias[0] += 1000 * float(reduced[0].max())
        model.get_submodule(f"{se}.conv_expand").weight[:, 0] = 0
    all_int8, costs = layer_costs(model, calibration, validation, "NHWC", float_front_stride=8)
    assert all_int8["cos_min"] < before["cos_min"]  # the stretched range costs accuracy
    assert costs[0].layer == f"{se}.act1"
    assert costs[0].drift["cos_min"] >= before["cos_min"] - 1e-3  # turning it off gives the cost back
    assert not any(c.layer.startswith(("backbone.blocks.0.", "backbone.conv_stem")) for c in costs)  # the float front


@pytest.mark.slow  # converts the graph per layer
def test_the_graph_measured_is_the_tflite_file_up_to_integer_arithmetic(trained_model, synth_train, tmp_path):
    """Costs are measured in the fake-quantized graph, so it must compute the int8 model the
    post-training .tflite is: no further from the file than twice the file's own int8 error (a
    wrong layout or a misplaced quantizer puts it far further). How close depends on the CPU that
    trained the test model and runs XNNPACK: file to graph 0.2x the file's int8 error on an Intel
    Xeon with AVX-512, 1.4x on an AVX2-only AMD EPYC, where integer rounding differs in places."""
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
    file_int8_error = 1 - cosine_drift(reference, file_embeddings)["cos_mean"]
    simulation_error = 1 - cosine_drift(file_embeddings, simulated)["cos_mean"]
    assert simulation_error < 2 * file_int8_error


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
