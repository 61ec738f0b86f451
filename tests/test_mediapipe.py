"""MediaPipe's own ImageEmbedder loads the exported model with docemb's metadata and embeds as docemb does.

MediaPipe lives in a separate environment (make mediapipe-env); these tests run it as a
subprocess and skip, saying so, when it is not there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")

from docemb.contract import BUILTIN_NORMALIZATION, check_contract, describe_model, write_contract  # noqa: E402
from docemb.embedders import model_embedder  # noqa: E402
from docemb.export.tflite_export import export_tflite  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDIAPIPE_PYTHON = Path(os.environ.get("DOCEMB_MEDIAPIPE_PYTHON") or REPO / ".venv-mediapipe" / "bin" / "python")
pytestmark = pytest.mark.skipif(
    not MEDIAPIPE_PYTHON.exists(), reason=f"no MediaPipe environment at {MEDIAPIPE_PYTHON} (make mediapipe-env)"
)


def run_mediapipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MEDIAPIPE_PYTHON), "-m", "docemb.export.mediapipe", *args], capture_output=True, text=True, timeout=300
    )


def export(model, path: Path, builtin: bool) -> Path:
    export_tflite(model, path, "float32", "NHWC", builtin_normalization=builtin)
    io = describe_model(path)
    if builtin:
        io["input"]["normalization"] = BUILTIN_NORMALIZATION
    write_contract(path, model.preprocessing, io, {"test": True})
    return path


def test_image_embedder_matches_docemb(small_model, tmp_path):
    path = export(small_model, tmp_path / "m.tflite", builtin=True)
    size = small_model.config.input_size
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):  # at the model's size, so MediaPipe's own resize is the identity
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(images[-1])
    result = run_mediapipe(str(path), "--embed", *map(str, images), "--embed-out", str(tmp_path / "mp.npy"))
    assert result.returncode == 0, result.stderr[-2000:]

    contract = check_contract(path)  # sha256 and size follow the metadata that was added
    assert contract["metadata"].startswith("MediaPipe ImageEmbedder")
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in images])
    expected = model_embedder(path)(small_model.preprocessing.normalize(pixels))
    np.testing.assert_allclose(np.load(tmp_path / "mp.npy"), expected, atol=1e-5)


def test_model_without_builtin_normalization_is_refused(small_model, tmp_path):
    path = export(small_model, tmp_path / "plain.tflite", builtin=False)
    result = run_mediapipe(str(path))
    assert result.returncode != 0
    assert "plain.tflite" in result.stderr and "--builtin-normalization" in result.stderr
