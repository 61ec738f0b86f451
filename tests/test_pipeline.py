"""The whole path as a user runs it, on a tiny run: synth -> train -> export -> quantize -> bench.

The pipeline runs once (a module fixture); each test checks one promise of its outputs.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from docemb.cli import main
from docemb.formats import FORMATS
from docemb.quantize.calibration import calibration_pool
from docemb.quantize.sensitivity import DriftTarget

pytestmark = pytest.mark.slow  # reruns whole stages: make test-all and CI, not make test

# every format but fp16 (it quantizes nothing and times like float32 here)
FILES = tuple(f.file_name() for f in FORMATS if f.key != "tflite-fp16")
QAT_STEPS = 3
QAT_IMAGES = 8


@dataclass
class Pipeline:
    root: Path
    models: Path
    report: dict  # bench.json
    eval_name: str

    @property
    def rows(self) -> dict[str, dict]:
        return {row["name"]: row for row in self.report["models"]}

    def quantization(self, name: str, folder: Path | None = None) -> dict:
        return json.loads(((folder or self.models) / f"{name}.contract.json").read_text())["quantization"]

    def card(self, name: str) -> str:
        return (self.models / f"{name}.card.md").read_text()


def _train_and_export(synth_train: Path, synth_eval: Path, run: Path, models: Path) -> None:
    tiny = (
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--input-size",
        "64",
        "--max-side",
        "96",
        "--work-size",
        "72",
        "--workers",
        "0",
    )
    main(["train", "--data", str(synth_train), "--eval-data", str(synth_eval), "--out", str(run), *tiny])
    checkpoint = str(run / "model.safetensors")
    main(["export", "--ckpt", checkpoint, "--out", str(models), "--check-data", str(synth_eval), "--include", "onnx", "tflite"])
    main(["export", "--ckpt", checkpoint, "--untrained", "--out", str(models)])


def _quantize(synth_train: Path, models: Path, tuned_onnx: Path) -> None:
    calib = ("--calib", str(synth_train), "--calib-count", "3")  # 3 images (uneven batches broke entropy calibration once)
    qat = (
        "--qat",
        "always",
        "--qat-steps",
        str(QAT_STEPS),
        "--qat-images",
        str(QAT_IMAGES),
    )  # the fine-tune's path, not its gain
    # onnxruntime's own file (no fine-tune, no float front), whose layers bench --layer-drift names
    main(["quantize", "--model", str(models / "model.onnx"), *calib, "--qat", "never", "--max-float-nodes", "0"])
    # the fine-tune's path for ONNX (the fine-tuned file is exported from the torch graph)
    main(["quantize", "--model", str(models / "model.onnx"), *calib, "--include", "static", "--out", str(tuned_onnx), *qat])
    main(["quantize", "--model", str(models / "model.tflite"), *calib, *qat])


@pytest.fixture(scope="module")
def pipeline(synth_train, synth_eval, tmp_path_factory) -> Pipeline:
    root = tmp_path_factory.mktemp("pipeline")
    models = root / "models"
    _train_and_export(synth_train, synth_eval, root / "train", models)
    _quantize(synth_train, models, root / "onnx_qat")
    timing = ("--runs", "5", "--warmup", "1", "--threads", "1", "2")
    bench = ("bench", *(str(models / f) for f in (*FILES, "untrained.onnx")), "--ref", str(models / "model.onnx"))
    gate = ("--gate", "int8.size_mb < 0.8 * float.size_mb")
    main([*bench, "--data", str(synth_eval), "--out", str(root / "bench"), *timing, *gate, "--layer-drift"])
    report = json.loads((root / "bench" / "bench.json").read_text())
    return Pipeline(root, models, report, f"{synth_eval.parent.name}/{synth_eval.name}")


def test_bench_scores_every_file_and_float_files_match_their_reference(pipeline):
    rows = pipeline.rows
    assert set(rows) == {*FILES, "untrained.onnx"}
    for float_model in ("model.onnx", "model.tflite"):
        assert rows[float_model]["eval"][pipeline.eval_name]["cos_mean"] > 0.9999
        assert rows[float_model]["eval"][pipeline.eval_name]["top1_agreement"] == 1.0
    assert "cos_mean" not in rows["untrained.onnx"]["eval"][pipeline.eval_name]  # no drift against other weights
    assert rows["model_int8_static.onnx"]["size_mb"] < rows["model.onnx"]["size_mb"]


def test_int8_tflite_is_one_xnnpack_partition_and_onnx_names_what_nnapi_would_not_take(pipeline):
    rows = pipeline.rows
    for int8_tflite in ("model_int8_static.tflite", "model_int8_full.tflite"):
        assert rows[int8_tflite]["operators"]["xnnpack_on_host"]["partitions"] == 1
        assert rows[int8_tflite]["operators"]["delegates"]["XNNPACK"]["unsupported"] == []
    assert "LayerNormalization" in rows["model.onnx"]["operators"]["execution_providers"]["NNAPI"]["unsupported_ops"]


def test_latency_is_measured_for_every_runtime_and_thread_count(pipeline):
    rows = pipeline.rows
    runtimes = {(lat["runtime"], lat["threads"]) for lat in rows["model.tflite"]["latency"]}
    assert runtimes == {("litert+xnnpack", 1), ("litert+xnnpack", 2), ("litert", 1), ("litert", 2)}
    assert all(lat["p50_ms"] > 0 and lat["peak_rss_mb"] > 0 for row in rows.values() for lat in row["latency"])


def test_layer_drift_names_the_worst_layers_of_onnxruntime_static_int8_only(pipeline):
    worst = pipeline.rows["model_int8_static.onnx"]["layer_drift"]
    assert worst and worst[0]["own_sqnr_db"] <= worst[-1]["own_sqnr_db"] and worst[0]["node"]
    assert pipeline.rows["model_int8_static.tflite"]["layer_drift"] is None  # TFLite int8 keeps no float tensor names


def test_reports_hold_the_gate_tables_and_plots(pipeline):
    bench = pipeline.root / "bench"
    assert pipeline.report["gates"] == [{"expression": "int8.size_mb < 0.8 * float.size_mb", "passed": True, "failures": []}]
    bench_md = (bench / "bench.md").read_text()
    assert "model_int8_static.tflite" in bench_md and "## Per-layer int8 drift" in bench_md
    assert "## Phone op profile" not in bench_md  # no phone run here
    assert "<table>" in (bench / "bench.html").read_text()
    assert (bench / "latency_vs_drift.png").stat().st_size > 0


def test_quantize_reports_say_what_each_run_wrote_and_save_its_options(pipeline):
    models = pipeline.models
    reports = {name: json.loads((models / f"{name}.quantize_report.json").read_text()) for name in ("model.onnx", "model.tflite")}
    assert set(reports["model.onnx"]) == {"float_model", "dynamic", "static"}  # the TFLite run's report is its own
    assert set(reports["model.tflite"]) == {"float_model", "dynamic", "static", "full"}
    assert reports["model.tflite"]["full"]["graph"] == "litert-full"
    assert "qat_steps: 3" in (models / "model.tflite.quantize.yaml").read_text()


def test_dynamic_tflite_alone_still_chooses_its_layers_by_drift(pipeline, synth_train):
    folder = pipeline.root / "tflite_dynamic"
    main(
        [
            "quantize",
            "--model",
            str(pipeline.models / "model.tflite"),
            "--calib",
            str(synth_train),
            "--include",
            "dynamic",
            "--out",
            str(folder),
        ]
    )
    alone, together = (pipeline.quantization("model_int8_dynamic.tflite", where) for where in (folder, None))
    assert alone["graph"] == "litert-dynamic" and alone["drift"] == together["drift"]  # same validation images, same walk
    assert alone["drift_target"] == {"cos_mean": 0.998} and 0 < alone["int8_weight_share"] <= 1
    assert {layer["op_type"] for layer in alone["float_nodes"]} >= {"DEPTHWISE_CONV_2D"}


def test_static_onnx_records_its_calibration_and_layer_errors(pipeline):
    static_onnx = pipeline.quantization("model_int8_static.onnx")
    assert static_onnx["graph"] == "ort-qdq" and "qat" not in static_onnx
    assert static_onnx["calibration"]["method"] in ("minmax", "entropy", "percentile")
    assert set(static_onnx["calibration"]["compared"]) == {"minmax", "entropy", "percentile"}
    assert (pipeline.models / "model_int8_static.onnx.layers.json").is_file()
    dynamic_onnx = pipeline.quantization("model_int8_dynamic.onnx")
    assert 0 < dynamic_onnx["int8_weight_share"] <= 1 and dynamic_onnx["drift_target"] == {"cos_mean": 0.998}


def test_onnx_fine_tune_keeps_the_file_that_drifts_less(pipeline):
    folder = pipeline.root / "onnx_qat"
    tuned = pipeline.quantization("model_int8_static.onnx", folder)
    qat = tuned["qat"]
    # the float-layer search runs only on onnxruntime's own file (neither the float front nor the
    # fine-tune replaced it), and then sets the drift
    layers = json.loads((folder / "model_int8_static.onnx.layers.json").read_text())
    mixed = layers["mixed_precision"]
    assert mixed is None or tuned["graph"] == "ort-qdq"
    # the per-layer errors stay those of onnxruntime's file; the report says which file was kept
    assert layers["layers_of"].startswith("onnxruntime static QDQ int8") and layers["kept"] == tuned["scheme"]
    expected = qat["fine_tuned_drift"] if qat["kept"] else (mixed["drift"] if mixed else qat["post_training_drift"])
    assert qat["steps"] == QAT_STEPS and tuned["drift"] == expected
    assert (tuned["calibration"]["method"] == "histogram") == (tuned["graph"] == "pt2e-qdq")
    assert not qat["kept"] or tuned["graph"] == "pt2e-qdq"
    assert not list(folder.glob("*.qat.onnx"))


def test_a_card_beside_every_file_says_where_it_came_from(pipeline):
    for name in FILES:
        card = pipeline.card(name)
        assert card.startswith(f"# {name}") and "## Source" in card
    static_card = pipeline.card("model_int8_static.tflite")
    drift = pipeline.quantization("model_int8_static.tflite")["drift"]
    assert f"cosine to float mean {drift['cos_mean']:.4f}" in static_card
    assert "calibration: histogram, 3 images" in static_card and "XNNPACK: 1 partition(s)" in static_card
    assert "float front (stem and first blocks, input float32): conv_stem, bn1, act1, blocks.0" in static_card
    assert "float front" not in pipeline.card("model_int8_full.tflite")


def test_every_contract_says_how_to_verify_the_shortlist(pipeline):
    from docemb.verify import contract_entry

    for name in FILES:
        contract = json.loads((pipeline.models / f"{name}.contract.json").read_text())
        assert contract["verification"] == contract_entry(), name


def test_tflite_fine_tune_keeps_the_file_that_drifts_less_and_diagnoses_misses(pipeline, synth_train):
    for kind in ("static", "full"):
        quantization = pipeline.quantization(f"model_int8_{kind}.tflite")
        qat = quantization["qat"]
        assert qat["steps"] == QAT_STEPS and qat["images"] == min(QAT_IMAGES, len(calibration_pool([synth_train])))
        assert quantization["drift"] == (qat["fine_tuned_drift"] if qat["kept"] else qat["post_training_drift"])
        assert f"quantization-aware fine-tune ({QAT_STEPS} steps" in pipeline.card(f"model_int8_{kind}.tflite")
        # a file that missed the target post-training gets its layers' int8 cost, worst first
        layers = pipeline.models / f"model_int8_{kind}.tflite.layers.json"
        assert layers.exists() == (not DriftTarget().met(qat["post_training_drift"]))
        if layers.exists():
            costs = json.loads(layers.read_text())["layers"]
            assert costs and [c["gain_min"] for c in costs] == sorted((c["gain_min"] for c in costs), reverse=True)
    assert not list(pipeline.models.glob("*.qat.tflite"))
    assert "qat" not in pipeline.quantization("model_int8_dynamic.tflite")


def test_a_release_bar_the_int8_model_misses_exits_1(pipeline, synth_eval):
    files = (str(pipeline.models / f) for f in ("model.onnx", "model_int8_static.onnx"))
    timing = ("--runs", "2", "--warmup", "0", "--threads", "1")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench",
                *files,
                "--data",
                str(synth_eval),
                "--out",
                str(pipeline.root / "gated"),
                *timing,
                "--gate",
                "int8.p50_ms < 0",
            ]
        )
    assert exit_info.value.code == 1
