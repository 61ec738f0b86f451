"""The benchmark harness: operator inventory and support, benchmark_model over adb (command,
run, parse), gates, and host latency in a worker process."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from docemb.benchmark.adb import (
    AdbDevice,
    BenchmarkOptions,
    LocalDevice,
    benchmark_command,
    device_latencies,
    parse_benchmark_output,
)
from docemb.benchmark.gate import evaluate_gate
from docemb.benchmark.latency import measure_in_worker
from docemb.benchmark.ops import (
    OpRecord,
    delegate_support,
    layer_from_tensor_name,
    load_support_tables,
    onnx_cpu_graph,
    onnx_ep_coverage,
)
from docemb.errors import DocembError
from docemb.export.onnx_export import export_onnx

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


# --- operators ---------------------------------------------------------------------------


def test_support_tables_name_their_source_and_version():
    tables = {t.delegate: t for t in load_support_tables()}
    assert set(tables) == {"XNNPACK", "GPU", "NNAPI"}
    for table in tables.values():
        assert table.source and table.version and "CONV_2D" in table.ops


def test_xnnpack_table_flags_int8_hardswish_and_hybrid_depthwise():
    """The two ops this project saw XNNPACK leave out on the host, as the table predicts them."""
    records = [
        OpRecord(0, "CONV_2D", ("int8", "int8", "int32"), "int8", True, "backbone.conv_stem"),
        OpRecord(1, "HARD_SWISH", ("int8",), "int8", True, "backbone.bn1.act"),
        OpRecord(2, "DEPTHWISE_CONV_2D", ("float32", "int8", "float32"), "float32", False, "backbone.0.0.conv_dw"),
        OpRecord(3, "HARD_SWISH", ("float32",), "float32", False, "backbone.1.0.act"),
        OpRecord(4, "DEQUANTIZE", ("int8",), "float32", False, "head"),
    ]
    support = delegate_support(records, load_support_tables())
    left = {(u["op"], u["dtype"], u["layer"]) for u in support["XNNPACK"]["unsupported"]}
    assert left == {("HARD_SWISH", "int8", "backbone.bn1.act"), ("DEPTHWISE_CONV_2D", "hybrid", "backbone.0.0.conv_dw")}
    assert support["XNNPACK"]["ops_supported"] == 3
    assert support["GPU"]["unsupported"] == []  # the GPU runs quantized models through a float view


def test_layer_names_come_from_litert_torch_tensor_names():
    name = (
        "docemb.edge_model.EdgeInput/docemb.model.EmbeddingModel_model/timm.models.mobilenetv3.MobileNetV3Features_backbone/"
        "torch.nn.modules.container.Sequential_0/timm.models._efficientnet_blocks.DepthwiseSeparableConv_0/"
        "torch.nn.modules.conv.Conv2d_conv_dw;2"
    )
    assert layer_from_tensor_name(name) == "backbone.0.0.conv_dw"


def test_onnx_coverage_flags_what_nnapi_does_not_take(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "m.onnx")
    coverage = onnx_ep_coverage(path)
    nnapi = coverage["NNAPI"]
    assert "LayerNormalization" in nnapi["unsupported_ops"]  # the head's LayerNorms
    assert all(layer.startswith("/head/") for layer in nnapi["unsupported_layers"]["LayerNormalization"])
    assert nnapi["nodes_supported"] < nnapi["nodes_total"]
    assert set(coverage) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}


def test_onnx_cpu_graph_shows_the_float_ops_int8_leaves_between_qdq(small_model, tmp_path):
    """onnxruntime fuses HardSwish into float convolutions but not into QLinearConv: in the QDQ
    graph it runs (as HardSigmoid and a multiply) on dequantized activations."""
    from docemb.quantize.ort import quantize_static_int8

    float_path = export_onnx(small_model, tmp_path / "m.onnx")
    calibration = np.random.default_rng(0).normal(0, 1, (4, 3, 64, 64)).astype(np.float32)
    int8_path = quantize_static_int8(float_path, tmp_path / "m_int8.onnx", calibration, "minmax")
    float_graph, int8_graph = onnx_cpu_graph(float_path), onnx_cpu_graph(int8_path)
    assert float_graph["float_between_qdq"] == {} and "HardSwish" not in float_graph["ops"]
    assert int8_graph["ops"].get("QLinearConv", 0) > 0
    assert int8_graph["float_between_qdq"].get("HardSigmoid", 0) > 0


def test_tflite_inventory_flags_the_unsupported_op_of_a_real_model(small_model, tmp_path):
    """An int8 model converted with HardSwish as is: the inventory names HARD_SWISH int8 for
    XNNPACK with the torch layer it comes from, as the host runtime confirms."""
    pytest.importorskip("litert_torch")
    from test_tflite import int8_with_hardswish_kept

    from docemb.benchmark.ops import operator_report

    path = int8_with_hardswish_kept(small_model, tmp_path / "m.tflite")
    report = operator_report(path)
    flagged = [u for u in report["delegates"]["XNNPACK"]["unsupported"] if u["op"] == "HARD_SWISH"]
    assert flagged and all(u["dtype"] == "int8" for u in flagged)
    assert any(u["layer"].startswith("backbone.") for u in flagged)
    assert "HARD_SWISH" in report["xnnpack_on_host"]["not_delegated"]


# --- benchmark_model -----------------------------------------------------------------------


def test_parser_reads_current_output_with_op_profile():
    output = parse_benchmark_output((FIXTURES / "profiled_xnnpack.txt").read_text())
    assert output.init_ms == pytest.approx(21.734)
    assert output.first_ms == pytest.approx(1.482)
    assert output.warmup_mean_ms == pytest.approx(0.46125)
    assert output.mean_ms == pytest.approx(0.412735)
    assert output.median_ms == pytest.approx(0.403) and output.p95_ms == pytest.approx(0.471)
    assert output.std_ms == pytest.approx(0.031) and output.runs == 200
    assert output.peak_memory_mb == pytest.approx(9.125)
    # the initialisation's Run Order table is not mistaken for the inference one
    assert [op["node_type"] for op in output.ops] == ["QUANTIZE", "TfLiteXNNPackDelegate", "DIV"]
    assert output.ops[1]["avg_ms"] == pytest.approx(0.372) and output.ops[1]["name"] == "[embed_output_0_output]:173"
    assert {t["node_type"]: t["count"] for t in output.op_types} == {"TfLiteXNNPackDelegate": 1, "QUANTIZE": 1, "DIV": 1}


def test_parser_reads_old_format_start_column_and_scientific_notation():
    output = parse_benchmark_output((FIXTURES / "old_format_nnapi.txt").read_text())
    assert output.init_ms == pytest.approx(180.5)
    assert output.mean_ms == pytest.approx(1007.2)
    assert output.warmup_mean_ms == pytest.approx(1104.6)
    assert output.first_ms is None and output.median_ms is None
    assert output.runs == 50
    assert [(op["node_type"], op["avg_ms"]) for op in output.ops] == [("TfLiteNnapiDelegate", 1000.7), ("DIV", 6.55)]
    assert output.op_types[0]["percent"] == pytest.approx(99.35)


def test_parser_refuses_output_without_timings():
    with pytest.raises(DocembError, match="Inference timings"):
        parse_benchmark_output("ERROR: Could not open '/data/local/tmp/docemb/m.tflite'.\n")


def test_command_switches_delegates_explicitly():
    gpu = benchmark_command(
        "/data/local/tmp/docemb/benchmark_model", "/data/local/tmp/docemb/m.tflite", BenchmarkOptions(4, "gpu", 5, 50, True)
    )
    assert gpu[0] == "/data/local/tmp/docemb/benchmark_model"
    assert {"--graph=/data/local/tmp/docemb/m.tflite", "--num_threads=4", "--use_xnnpack=false", "--use_gpu=true"} <= set(gpu)
    assert {"--warmup_runs=5", "--num_runs=50", "--min_secs=0", "--enable_op_profiling=true"} <= set(gpu)
    xnnpack = benchmark_command("bm", "m.tflite", BenchmarkOptions())
    assert "--use_xnnpack=true" in xnnpack and not any(a.startswith(("--use_gpu", "--use_nnapi")) for a in xnnpack)
    with pytest.raises(DocembError, match="unknown delegate"):
        benchmark_command("bm", "m.tflite", BenchmarkOptions(delegate="hexagon"))


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_device_latency_runs_pushes_and_parses_through_adb(tmp_path):
    """A stand-in `adb` records every call and answers the benchmark run with sample output:
    the real AdbDevice, command construction and parser run end to end."""
    log = tmp_path / "adb_calls.jsonl"
    adb = _script(
        tmp_path / "adb",
        "import json, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"if 'benchmark_model' in sys.argv[-1] and '--graph' in sys.argv[-1]: print(open({str(FIXTURES / 'profiled_xnnpack.txt')!r}).read())\n",
    )
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    model = tmp_path / "model_int8_static.tflite"
    model.write_bytes(b"TFL3")
    runs = [BenchmarkOptions(threads=4, op_profile=True), BenchmarkOptions(threads=1, delegate="gpu")]
    (latency, output), (gpu, _) = device_latencies(AdbDevice("R5CX123", adb=str(adb)), binary, model, runs)

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(call[:2] == ["-s", "R5CX123"] for call in calls)
    pushes = [c[2:] for c in calls if c[2] == "push"]  # once each, whatever the number of runs
    assert pushes == [
        ["push", str(binary), "/data/local/tmp/docemb/benchmark_model"],
        ["push", str(model), "/data/local/tmp/docemb/model_int8_static.tflite"],
    ]
    assert gpu.runtime == "benchmark_model gpu" and "--use_gpu=true" in calls[-1][3]
    run = calls[-2][2:]
    assert (
        run[0] == "shell" and "--graph=/data/local/tmp/docemb/model_int8_static.tflite" in run[1] and "--num_threads=4" in run[1]
    )
    assert latency.device == "adb:R5CX123" and latency.runtime == "benchmark_model xnnpack" and latency.threads == 4
    assert latency.mean_ms == pytest.approx(0.412735) and latency.p50_ms == pytest.approx(0.403)
    assert output.op_types[0]["node_type"] == "TfLiteXNNPackDelegate"

    from docemb.benchmark.report import op_profile_rows

    row = {"name": model.name, "latency": [{**latency.to_dict(), "op_profile": {"by_type": output.op_types}}]}
    _, rows = op_profile_rows({"models": [row]})
    assert rows[0][:5] == ["model_int8_static.tflite", "adb:R5CX123", "benchmark_model xnnpack", "4", "TfLiteXNNPackDelegate"]


def test_device_latency_on_the_host_runs_the_binary_it_is_given(tmp_path):
    fake = _script(
        tmp_path / "benchmark_model",
        "import sys\n"
        "assert any(a.startswith('--graph=') for a in sys.argv), sys.argv\n"
        f"print(open({str(FIXTURES / 'old_format_nnapi.txt')!r}).read())\n",
    )
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    [(latency, _)] = device_latencies(LocalDevice(tmp_path / "device"), fake, model, [BenchmarkOptions(delegate="nnapi")])
    assert latency.device == "host" and latency.mean_ms == pytest.approx(1007.2) and latency.p50_ms is None


def test_adb_failure_names_the_command(tmp_path):
    adb = _script(tmp_path / "adb", "import sys\nprint('error: device unauthorized', file=sys.stderr)\nsys.exit(1)\n")
    with pytest.raises(DocembError, match="device unauthorized"):
        AdbDevice("X", adb=str(adb)).push(tmp_path / "adb")


# --- gates -------------------------------------------------------------------------------------


def _row(
    name: str, role: str, quantization: str | None, p50: float, cos: float, r1_real: float, float_model: str | None = None
) -> dict:
    return {
        "name": name,
        "role": role,
        "quantization": quantization,
        "float_model": float_model,
        "size_mb": 1.0,
        "latency": [{"p50_ms": p50, "mean_ms": p50}],
        "eval": {"synth/eval": {"cos_mean": 0.999, "recall@1": 0.5}, "realdocs/eval": {"cos_mean": cos, "recall@1": r1_real}},
    }


REPORT = {
    "models": [
        _row("model.onnx", "reference", None, 0.50, 1.0, 0.33),
        _row("model.tflite", "model", None, 0.45, 1.0, 0.33),
        _row("model_int8_static.onnx", "model", "onnxruntime static QDQ int8", 0.83, 0.994, 0.27, "model.onnx"),
        _row("model_int8_static.tflite", "model", "litert-torch PT2E static int8", 0.40, 0.995, 0.30, "model.tflite"),
        _row("peer_x_int8_static.tflite", "peer (x)", "litert-torch PT2E static int8", 9.0, 0.5, 0.01, "peer_x.tflite"),
    ]
}


def test_gate_that_should_fail_fails_and_names_the_model():
    result = evaluate_gate("int8.cos_mean>=0.99 and int8.p50_ms<=float.p50_ms", REPORT)
    assert not result.passed
    # the TFLite int8 beats its own float; peers are for comparison, not part of the release
    assert result.failures == ["int8=model_int8_static.onnx, float=model.onnx"]
    assert not evaluate_gate("peer_x_int8_static_tflite.cos_mean >= 0.9", REPORT).passed


def test_gate_takes_the_worst_eval_set_and_arithmetic():
    assert not evaluate_gate("int8.cos_mean >= 0.998", REPORT).passed  # 0.999 on synth, but 0.994 on real
    assert evaluate_gate("model_int8_static_tflite.p50_ms <= 0.9 * model_tflite.p50_ms", REPORT).passed
    assert evaluate_gate("float.r1 >= 0.33 and not int8.r1 > 0.5", REPORT).passed


@pytest.mark.parametrize(
    "expression, message",
    [
        ("int8.cos_mean >= ", "not a valid expression"),
        ("__import__('os').system('true')", "not allowed"),
        ("int8.latency >= 1", "unknown metric"),
        ("fp8.p50_ms < 1", "no model called 'fp8'"),
    ],
)
def test_gate_refuses_what_it_cannot_evaluate(expression, message):
    with pytest.raises(DocembError, match=message):
        evaluate_gate(expression, REPORT)


# --- host latency ---------------------------------------------------------------------------


def test_host_latency_worker_measures_onnx(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "m.onnx")
    sample = np.zeros((1, 3, 64, 64), np.float32)
    latency = measure_in_worker(path, sample, "onnxruntime", threads=1, warmup=2, runs=10)
    assert len(latency.times_ms) == 10 and latency.p50_ms <= latency.p99_ms
    assert 0 < latency.runtime_rss_mb < latency.peak_rss_mb
    with pytest.raises(DocembError, match="m.onnx"):
        measure_in_worker(path, sample, "litert", threads=1, warmup=0, runs=1)


# --- drift pairing and peers -----------------------------------------------------------------


def test_each_model_drifts_against_its_own_float_model():
    from docemb.benchmark.run import drift_reference

    ckpt, peer_ckpt = "/runs/a/model.safetensors", "/models/peers/peer_x.safetensors"
    contracts = {
        Path("model.onnx"): {"sha256": "a", "source": {"checkpoint": ckpt}},
        Path("model.tflite"): {"sha256": "b", "source": {"checkpoint": ckpt}},
        Path("model_int8_static.tflite"): {
            "sha256": "c",
            "source": {"checkpoint": ckpt, "float_model": "model.tflite", "float_sha256": "b"},
        },
        Path("old_int8.onnx"): {
            "sha256": "d",
            "source": {"checkpoint": ckpt, "float_model": "model.onnx", "float_sha256": "stale"},
        },
        Path("untrained.onnx"): {"sha256": "e", "source": {"untrained": True}},
        Path("peer_x.onnx"): {"sha256": "f", "source": {"checkpoint": peer_ckpt, "peer": "x"}},
        Path("peer_x_int8_static.onnx"): {
            "sha256": "g",
            "source": {"checkpoint": peer_ckpt, "float_model": "peer_x.onnx", "float_sha256": "f"},
        },
    }
    reference = Path("model.onnx")
    pairs = {path.name: drift_reference(path, reference, contracts) for path in contracts}
    assert pairs == {
        "model.onnx": reference,
        "model.tflite": reference,  # same checkpoint
        "model_int8_static.tflite": Path("model.tflite"),  # the file it was quantized from
        "old_int8.onnx": reference,  # its float file changed since: fall back to the checkpoint's reference
        "untrained.onnx": None,
        "peer_x.onnx": None,  # other weights: no drift against docemb's model
        "peer_x_int8_static.onnx": Path("peer_x.onnx"),
    }


def test_efficientnet_lite0_peer_carries_the_packaged_imagenet_weights():
    from docemb.model import read_state_dict
    from docemb.peers import build_peer, efficientnet_lite0_weights

    model, weights = build_peer("efficientnet_lite0")
    assert weights.startswith("ImageNet")
    first_tensor = next(iter(read_state_dict(efficientnet_lite0_weights()).values()))
    assert np.array_equal(model.backbone.conv_stem.weight.detach().numpy(), first_tensor.numpy())
    with pytest.raises(DocembError, match="unknown peer"):
        build_peer("resnet50")


def test_models_that_frame_templates_differently_are_benchmarked_on_the_same_captures(small_model, synth_eval, tmp_path):
    """`make bench` puts peers (templates unframed) beside the shipped model (framed): each
    model's templates are framed as its contract says, and the captures are the same for all."""
    from dataclasses import replace

    from docemb.benchmark.run import benchmark
    from docemb.cli import main
    from docemb.model import save_model

    paths = {}
    for name, frame in (("plain", 0.0), ("framed", 0.1)):
        small_model.config = replace(small_model.config, template_frame=frame)
        save_model(tmp_path / f"{name}.safetensors", small_model)  # the same weights
        main(["export", "--ckpt", str(tmp_path / f"{name}.safetensors"), "--out", str(tmp_path / name), "--include", "onnx"])
        paths[name] = tmp_path / name / "model.onnx"
    timing = {"threads": (1,), "runs": 2, "warmup": 0}
    together, _ = benchmark([paths["framed"]], paths["plain"], [synth_eval], **timing)
    alone, _ = benchmark([paths["framed"]], paths["framed"], [synth_eval], **timing)
    recall = {row["file"]: next(iter(row["eval"].values()))["recall@1"] for row in together["models"]}
    assert recall[str(paths["framed"])] == next(iter(alone["models"][0]["eval"].values()))["recall@1"]


def test_host_thread_counts_stop_at_the_cores_the_host_has(monkeypatch):
    """More threads than cores time contention, not the model (and a minute of make export-int8)."""
    from docemb.benchmark.cli import host_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert host_threads() == [1, 2]
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert host_threads() == [1, 2, 4]
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert host_threads() == [1]


def test_summary_shows_top1_agreement_for_each_eval_set():
    """The worst set alone hid that real documents keep their float match where generated ones,
    whose templates sit close together, do not."""
    from docemb.benchmark.report import summary_rows

    def scores(top1: float, clear: float) -> dict:
        return {"recall@1": 0.5, "top1_agreement": top1, "top1_agreement_clear": clear, "cos_mean": 0.99, "cos_min": 0.9}

    row = {
        "name": "model_int8_static.tflite",
        "format": "tflite",
        "size_mb": 2.8,
        "latency": [],
        "operators": {},
        "eval": {"synth/eval": scores(0.723, 0.983), "realdocs/eval": scores(0.96, 0.987)},
    }
    header, rows = summary_rows({"eval_sets": {"synth/eval": {}, "realdocs/eval": {}}, "models": [row]})
    cells = dict(zip(header, rows[0]))
    assert cells["synth/eval top1"] == "0.723" and cells["realdocs/eval top1"] == "0.960"
    assert cells["top1 clear"] == "0.983"  # the other drift columns stay the worst set's
