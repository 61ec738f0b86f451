"""Golden files for the Android demo: Python writes them for any int8 model, and the app's
plain-Java core (run with the JDK when there is one) reproduces Python's inputs and decisions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")

from docemb.contract import describe_model, write_contract  # noqa: E402
from docemb.errors import DocembError  # noqa: E402
from docemb.export.android_assets import write_android_assets  # noqa: E402
from docemb.quantize.calibration import calibration_inputs  # noqa: E402
from docemb.quantize.tflite import quantize_tflite  # noqa: E402

CORE = Path(__file__).resolve().parents[1] / "android_demo" / "core" / "src"
THRESHOLDS = {"measured_on": "test", "match": {"threshold": 0.9, "fpr": 0.01, "tpr": 0.5, "eval_set": "synth/eval"}, "table": {}}


@pytest.fixture(scope="module")
def int8_model(synth_train, tmp_path_factory):
    import torch

    from docemb.model import ModelConfig, build_model
    from docemb.preprocess import TemplateView

    torch.manual_seed(0)
    views = (TemplateView(0.05), TemplateView(0.0, -6), TemplateView(0.1, 6))  # frames and turns the Java core must repeat
    config = ModelConfig(arch="lcnet_050", input_size=64, embedding_dim=32, squeeze_channels=16, template_views=views)
    model = build_model(config, seed=0).eval()
    calibration = calibration_inputs([synth_train], model.preprocessing, 8, offset=0)
    # full integer: the int8 input path (the committed assets cover the float32 input of the default)
    path = quantize_tflite(model, tmp_path_factory.mktemp("int8") / "m_int8.tflite", calibration, float_front_stride=0)
    write_contract(path, model.preprocessing, describe_model(path), {"test": True}, thresholds=THRESHOLDS)
    return path


def test_golden_files_describe_what_python_computed(int8_model, synth_eval, tmp_path):
    index = json.loads(write_android_assets(int8_model, synth_eval, tmp_path).read_text())
    assert (tmp_path / "model.tflite").read_bytes() == int8_model.read_bytes()
    assert index["input"]["dtype"] == "int8" and index["threshold"] == 0.9
    assert len(index["templates"]) == 3 and len(index["queries"]) == 6
    assert all(len(template["views"]) == 3 for template in index["templates"])
    for query in index["queries"]:
        tensor = np.fromfile(tmp_path / "golden" / query["input"], dtype=np.int8)
        assert tensor.size == 64 * 64 * 3
        scores = [score for _, score in query["expected"]["scores"]]
        assert scores == sorted(scores, reverse=True)
        best, top = query["expected"]["scores"][0]
        assert query["expected"]["decision"] == (best if top >= 0.9 else "unknown")


@pytest.mark.skipif(shutil.which("javac") is None, reason="no JDK (javac): the Java side of the golden test cannot run here")
def test_java_core_reproduces_python_inputs_and_decisions(int8_model, synth_eval, tmp_path):
    write_android_assets(int8_model, synth_eval, tmp_path / "assets")
    classes = tmp_path / "classes"
    subprocess.run(["javac", "--release", "17", "-d", str(classes), *map(str, CORE.rglob("*.java"))], check=True)
    result = subprocess.run(
        ["java", "-cp", str(classes), "dev.docemb.core.CoreTests", str(tmp_path / "assets")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 of " in result.stdout and "values not identical" in result.stdout  # bit-identical input tensors


def test_model_without_a_threshold_is_refused(synth_train, synth_eval, int8_model, tmp_path):
    bare = tmp_path / "bare.tflite"
    shutil.copyfile(int8_model, bare)
    contract = json.loads(Path(f"{int8_model}.contract.json").read_text())
    contract["thresholds"] = None
    Path(f"{bare}.contract.json").write_text(json.dumps(contract))
    with pytest.raises(DocembError, match="no match threshold"):
        write_android_assets(bare, synth_eval, tmp_path / "assets")
