"""The whole path as a user runs it, on a tiny run: synth -> train -> export -> quantize -> bench."""

import json

import pytest

from docemb.cli import main
from docemb.quantize.calibration import calibration_pool
from docemb.quantize.sensitivity import DriftTarget


def test_train_export_quantize_bench(synth_train, synth_eval, tmp_path):
    run = tmp_path / "train"
    models = tmp_path / "models"
    main(
        [
            "train",
            "--data",
            str(synth_train),
            "--eval-data",
            str(synth_eval),
            "--out",
            str(run),
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
        ]
    )
    main(
        [
            "export",
            *("--ckpt", str(run / "model.safetensors"), "--out", str(models), "--check-data", str(synth_eval)),
            *("--include", "onnx", "tflite"),
        ]
    )
    main(["export", "--ckpt", str(run / "model.safetensors"), "--untrained", "--out", str(models)])
    main(
        [
            "quantize",
            "--model",
            str(models / "model.onnx"),
            "--calib",
            str(synth_train),
            "--calib-count",
            "3",  # 3 calibration images (uneven batches broke entropy calibration once)
            *("--qat", "never"),  # onnxruntime's own file, whose layers bench --layer-drift names
        ]
    )
    main(  # the fine-tune's path for ONNX (the fine-tuned file is exported from the torch graph)
        [
            "quantize",
            *("--model", str(models / "model.onnx"), "--calib", str(synth_train), "--calib-count", "3"),
            *("--include", "static", "--out", str(tmp_path / "onnx_qat")),
            *("--qat", "always", "--qat-steps", "3", "--qat-images", "8"),
        ]
    )
    main(
        [
            "quantize",
            *("--model", str(models / "model.tflite"), "--calib", str(synth_train), "--calib-count", "3"),
            *("--qat", "always", "--qat-steps", "3", "--qat-images", "8"),  # the fine-tune's path, not its gain
        ]
    )
    files = (
        "model.onnx",
        "model_int8_dynamic.onnx",
        "model_int8_static.onnx",
        "model.tflite",
        "model_int8_static.tflite",
        "model_int8_full.tflite",
    )
    main(
        [
            "bench",
            *(str(models / f) for f in (*files, "untrained.onnx")),
            "--ref",
            str(models / "model.onnx"),
            "--data",
            str(synth_eval),
            "--out",
            str(tmp_path / "bench"),
            "--runs",
            "5",
            "--warmup",
            "1",
            "--threads",
            "1",
            "2",
            "--gate",
            "int8.size_mb < 0.5 * float.size_mb",
            "--layer-drift",
        ]
    )

    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    rows = {row["name"]: row for row in report["models"]}
    assert set(rows) == {*files, "untrained.onnx"}
    eval_name = f"{synth_eval.parent.name}/{synth_eval.name}"
    for float_model in ("model.onnx", "model.tflite"):
        assert rows[float_model]["eval"][eval_name]["cos_mean"] > 0.9999
        assert rows[float_model]["eval"][eval_name]["top1_agreement"] == 1.0
    assert "cos_mean" not in rows["untrained.onnx"]["eval"][eval_name]  # no drift against other weights
    assert rows["model_int8_static.onnx"]["size_mb"] < rows["model.onnx"]["size_mb"]
    for int8_tflite in ("model_int8_static.tflite", "model_int8_full.tflite"):
        assert rows[int8_tflite]["operators"]["xnnpack_on_host"]["partitions"] == 1
        assert rows[int8_tflite]["operators"]["delegates"]["XNNPACK"]["unsupported"] == []
    assert "LayerNormalization" in rows["model.onnx"]["operators"]["execution_providers"]["NNAPI"]["unsupported_ops"]
    runtimes = {(lat["runtime"], lat["threads"]) for lat in rows["model.tflite"]["latency"]}
    assert runtimes == {("litert+xnnpack", 1), ("litert+xnnpack", 2), ("litert", 1), ("litert", 2)}
    assert all(lat["p50_ms"] > 0 and lat["peak_rss_mb"] > 0 for row in rows.values() for lat in row["latency"])
    worst = rows["model_int8_static.onnx"]["layer_drift"]
    assert worst and worst[0]["own_sqnr_db"] <= worst[-1]["own_sqnr_db"] and worst[0]["node"]
    assert rows["model_int8_static.tflite"]["layer_drift"] is None  # TFLite int8 keeps no float tensor names
    assert report["gates"] == [{"expression": "int8.size_mb < 0.5 * float.size_mb", "passed": True, "failures": []}]
    bench_md = (tmp_path / "bench" / "bench.md").read_text()
    assert "model_int8_static.tflite" in bench_md and "## Per-layer int8 drift" in bench_md
    assert "## Phone op profile" not in bench_md  # no phone run here
    assert "<table>" in (tmp_path / "bench" / "bench.html").read_text()
    assert (tmp_path / "bench" / "latency_vs_drift.png").stat().st_size > 0
    static_onnx = json.loads((models / "model_int8_static.onnx.contract.json").read_text())["quantization"]
    assert static_onnx["calibration"]["method"] in ("minmax", "entropy", "percentile") and "qat" not in static_onnx
    assert (models / "model_int8_static.onnx.layers.json").is_file()
    reports = {name: json.loads((models / f"{name}.quantize_report.json").read_text()) for name in ("model.onnx", "model.tflite")}
    assert set(reports["model.onnx"]) == {"float_model", "dynamic", "static"}  # the TFLite run's report is its own
    assert set(reports["model.tflite"]) == {"float_model", "dynamic", "static", "full"}
    tuned_onnx = json.loads((tmp_path / "onnx_qat" / "model_int8_static.onnx.contract.json").read_text())["quantization"]
    qat = tuned_onnx["qat"]  # the fine-tuned QDQ file replaces onnxruntime's only if it drifts less
    assert qat["steps"] == 3 and tuned_onnx["drift"] == (qat["fine_tuned_drift"] if qat["kept"] else qat["post_training_drift"])
    assert (tuned_onnx["calibration"]["method"] == "histogram") == qat["kept"]
    assert not list((tmp_path / "onnx_qat").glob("*.qat.onnx"))
    dynamic_onnx = json.loads((models / "model_int8_dynamic.onnx.contract.json").read_text())["quantization"]
    assert 0 < dynamic_onnx["int8_weight_share"] <= 1 and dynamic_onnx["drift_target"] == {"cos_mean": 0.998}
    for name in files:  # a model card beside every file, saying where it came from and how far it drifts
        card = (models / f"{name}.card.md").read_text()
        assert card.startswith(f"# {name}") and "## Source" in card
    static_card = (models / "model_int8_static.tflite.card.md").read_text()
    drift = json.loads((models / "model_int8_static.tflite.contract.json").read_text())["quantization"]["drift"]
    assert f"cosine to float mean {drift['cos_mean']:.4f}" in static_card
    assert "calibration: histogram, 3 images" in static_card and "XNNPACK: 1 partition(s)" in static_card
    for kind in ("static", "full"):  # fine-tuned: the file kept is the one that drifts less, and the card says which
        quantization = json.loads((models / f"model_int8_{kind}.tflite.contract.json").read_text())["quantization"]
        qat = quantization["qat"]
        assert qat["steps"] == 3 and qat["images"] == min(8, len(calibration_pool([synth_train])))
        assert quantization["drift"] == (qat["fine_tuned_drift"] if qat["kept"] else qat["post_training_drift"])
        assert "quantization-aware fine-tune (3 steps" in (models / f"model_int8_{kind}.tflite.card.md").read_text()
        # a file that missed the target post-training gets its layers' int8 cost, worst first
        layers = models / f"model_int8_{kind}.tflite.layers.json"
        assert layers.exists() == (not DriftTarget().met(qat["post_training_drift"]))
        if layers.exists():
            costs = json.loads(layers.read_text())["layers"]
            assert costs and [c["gain_min"] for c in costs] == sorted((c["gain_min"] for c in costs), reverse=True)
    assert not list(models.glob("*.qat.tflite"))
    assert "qat" not in json.loads((models / "model_int8_dynamic.tflite.contract.json").read_text())["quantization"]
    assert "float front (stem and first blocks, input float32): conv_stem, bn1, act1, blocks.0" in static_card
    assert "float front" not in (models / "model_int8_full.tflite.card.md").read_text()

    # a release bar the int8 model misses exits 1
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "bench",
                *(str(models / f) for f in ("model.onnx", "model_int8_static.onnx")),
                *("--data", str(synth_eval), "--out", str(tmp_path / "gated"), "--runs", "2", "--warmup", "0", "--threads", "1"),
                *("--gate", "int8.p50_ms < 0"),
            ]
        )
    assert exit_info.value.code == 1
