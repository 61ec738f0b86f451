"""onnxruntime int8: dynamic layer choice by drift, static QDQ calibration, mixed precision."""

import numpy as np
import onnx
import pytest

from docemb.contract import describe_onnx, write_contract
from docemb.embedders import onnx_embedder
from docemb.evaluation import cosine_drift
from docemb.export.onnx_export import export_onnx
from docemb.quantize.calibration import calibration_inputs
from docemb.quantize.ort import pick_static_method, quantize_dynamic_int8, weighted_layers


@pytest.fixture()
def float_model(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "model.onnx")
    write_contract(path, small_model.preprocessing, describe_onnx(path), {"checkpoint": "test"})
    return path


def test_calibration_and_validation_images_are_disjoint(synth_train, small_model):
    calibration = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=0)
    validation = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=1)
    assert calibration.shape == (4, 3, 64, 64) and validation.shape == (4, 3, 64, 64)
    assert not any(np.allclose(a, b) for a in calibration for b in validation)


def test_dynamic_int8_is_smaller_and_close(float_model, synth_train, small_model):
    path = float_model.with_name("dyn.onnx")
    choice = quantize_dynamic_int8(float_model, path)
    inputs = calibration_inputs([synth_train], small_model.preprocessing, count=4)
    drift = cosine_drift(onnx_embedder(float_model)(inputs), onnx_embedder(path)(inputs))
    assert path.stat().st_size < float_model.stat().st_size
    assert drift["cos_mean"] > 0.95
    # without validation images every layer but the depthwise convs goes int8
    layers = weighted_layers(onnx.load(str(float_model)))
    assert choice.int8_layers == [layer.name for layer in layers if not layer.depthwise]
    assert [layer["name"] for layer in choice.float_layers] == [layer.name for layer in layers if layer.depthwise]
    assert choice.drift is None and 0 < choice.int8_weight_share < 1


def test_dynamic_int8_takes_layers_largest_first_until_the_target(float_model, synth_train, small_model):
    validation = calibration_inputs([synth_train], small_model.preprocessing, count=8, offset=1)
    reference = onnx_embedder(float_model)(validation)
    layers = [layer for layer in weighted_layers(onnx.load(str(float_model))) if not layer.depthwise]
    assert [layer.parameters for layer in layers] == sorted((layer.parameters for layer in layers), reverse=True)

    path = float_model.with_name("dyn.onnx")
    unreachable = quantize_dynamic_int8(float_model, path, validation, cos_mean_target=1.01)
    assert unreachable.int8_layers == [layers[0].name] and unreachable.target_met is False
    assert _int8_parameters(path) == layers[0].parameters

    # a target every layer meets: all go int8, and the recorded drift is the written file's
    choice = quantize_dynamic_int8(float_model, path, validation, cos_mean_target=0.5)
    assert choice.target_met and choice.int8_layers == [layer.name for layer in layers]
    measured = cosine_drift(reference, onnx_embedder(path)(validation))
    assert measured["cos_mean"] == pytest.approx(choice.drift["cos_mean"], abs=1e-6)
    assert unreachable.int8_weight_share < choice.int8_weight_share
    assert _int8_parameters(path) == sum(layer.parameters for layer in layers)


def _int8_parameters(path) -> int:
    """Weights a model stores as int8 (what the layer choice must have made int8, Gemms included)."""
    initializers = onnx.load(str(path)).graph.initializer
    return sum(int(np.prod(t.dims)) for t in initializers if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2)


def test_static_keeps_the_method_with_least_drift(float_model, synth_train, small_model):
    calibration = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=0)
    validation = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=1)
    out = float_model.with_name("static.onnx")
    best, results = pick_static_method(float_model, out, calibration, validation, ("minmax", "percentile"))
    assert set(results) == {"minmax", "percentile"}
    assert results[best]["cos_mean"] == max(r["cos_mean"] for r in results.values())
    # the file kept is the one measured best: re-measuring it gives the same drift
    measured = cosine_drift(onnx_embedder(float_model)(validation), onnx_embedder(out)(validation))
    assert measured["cos_mean"] == pytest.approx(results[best]["cos_mean"], abs=1e-6)
    assert "QuantizeLinear" in {n.op_type for n in __import__("onnx").load(str(out)).graph.node}


def test_static_int8_keeps_the_l2_normalisation_in_float(float_model, synth_train, small_model):
    """int8 squares lose the embedding's length (0.5 % on the default model), which scales every
    cosine; the normalisation's nodes stay float so the output is unit length again."""
    import onnx

    calibration = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=0)
    out = float_model.with_name("static.onnx")
    pick_static_method(float_model, out, calibration, calibration, ("minmax",))
    graph = onnx.load(str(out)).graph
    requantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    normalisation = [n for n in graph.node if n.name.startswith("/normalize/")]
    assert normalisation and not any(set(n.output) & requantized for n in normalisation)
    norms = np.linalg.norm(onnx_embedder(out)(calibration), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_histogram_calibration_takes_any_number_of_images(float_model, synth_train, small_model):
    """Entropy and percentile collectors stack per-run outputs; a ragged last batch broke them."""
    images = calibration_inputs([synth_train], small_model.preprocessing, count=4)
    calibration = np.concatenate([images] * 5)[:18]
    best, results = pick_static_method(
        float_model, float_model.with_name("s.onnx"), calibration, images, ("entropy", "percentile")
    )
    assert set(results) == {"entropy", "percentile"} and best in results


def test_layer_errors_name_graph_nodes_worst_first(float_model, synth_train, small_model):
    import onnx

    from docemb.layer_drift import layer_errors, preprocess_for_quantization
    from docemb.quantize.ort import quantize_static_int8

    inputs = calibration_inputs([synth_train], small_model.preprocessing, count=4)
    qdq = quantize_static_int8(float_model, float_model.with_name("q.onnx"), inputs, "minmax")
    errors = layer_errors(float_model, qdq, inputs)
    own = [e.own_sqnr_db for e in errors]
    assert len(errors) > 10 and own == sorted(own)
    prepared = float_model.with_name("prepared.onnx")
    preprocess_for_quantization(float_model, prepared)
    nodes = {n.name: n.op_type for n in onnx.load(str(prepared)).graph.node}
    assert all(nodes[e.node] == e.op_type for e in errors)  # names usable as nodes_to_exclude


def test_mixed_precision_keeps_a_layer_in_float_only_when_it_helps(float_model, synth_train, small_model):
    from docemb.layer_drift import layer_errors
    from docemb.quantize.ort import quantize_static_int8
    from docemb.quantize.sensitivity import DriftTarget, mixed_precision

    calibration = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=0)
    validation = calibration_inputs([synth_train], small_model.preprocessing, count=4, offset=1)
    out = quantize_static_int8(float_model, float_model.with_name("mixed.onnx"), calibration, "minmax")
    errors = layer_errors(float_model, out, validation)
    unreachable = DriftTarget(cos_mean=1.1, cos_min=1.1)
    result = mixed_precision(
        float_model, out, errors, calibration, validation, "minmax", unreachable, max_float_nodes=2, candidates=3
    )
    assert not result.target_met and len(result.trials) == 3
    assert [n["name"] for n in result.float_nodes] == [t["node"] for t in result.trials if t["kept"]][:2]
    assert result.drift["cos_mean"] >= result.drift_all_int8["cos_mean"]
    measured = cosine_drift(onnx_embedder(float_model)(validation), onnx_embedder(out)(validation))
    assert measured["cos_mean"] == pytest.approx(result.drift["cos_mean"], abs=1e-6)  # the file is the one reported

    easy = DriftTarget(cos_mean=0.0, cos_min=-1.0)
    result = mixed_precision(float_model, out, errors, calibration, validation, "minmax", easy)
    assert result.target_met and not result.trials and not result.float_nodes
