"""`docemb export`: ONNX files that compute what torch computes, contracts that refuse a changed file, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from docemb.contract import check_contract, contract_path, describe_onnx, read_contract, write_contract
from docemb.embedders import onnx_embedder, torch_embedder
from docemb.errors import DocembError
from docemb.export.onnx_export import TOLERANCE, export_onnx, max_abs_difference, verify_onnx


@pytest.fixture()
def exported(small_model, tmp_path):
    path = export_onnx(small_model, tmp_path / "model.onnx")
    write_contract(path, small_model.preprocessing, describe_onnx(path), {"checkpoint": "test"})
    return path


def inputs(model, n: int, seed: int = 0) -> np.ndarray:
    size = model.config.input_size
    return np.random.default_rng(seed).normal(0, 1, (n, 3, size, size)).astype(np.float32)


def test_onnx_matches_torch_at_any_batch_size(small_model, exported):
    for n in (1, 5):
        assert max_abs_difference(small_model, exported, inputs(small_model, n)) < TOLERANCE
    output = onnx_embedder(exported)(inputs(small_model, 3))
    assert np.allclose(np.linalg.norm(output, axis=1), 1.0, atol=1e-5)


def test_verify_catches_a_model_that_is_not_the_one_exported(small_model, exported, small_config):
    import torch

    from docemb.model import build_model

    other = build_model(small_config, seed=1).eval()
    with torch.no_grad():
        other.head.fc[0].weight.mul_(1.5)
    with pytest.raises(DocembError, match="differ from torch"):
        verify_onnx(other, exported, inputs(small_model, 4))


def test_contract_describes_the_model(small_model, exported):
    contract = check_contract(exported)
    size = small_model.config.input_size
    assert contract["input"] == {
        "name": "image",
        "shape": ["batch", 3, size, size],
        "dtype": "float32",
        "layout": "NCHW",
        "color_order": "RGB",
    }
    assert contract["output"]["shape"] == ["batch", small_model.config.embedding_dim]
    assert contract["output"]["l2_normalized"] is True
    assert contract["preprocessing"]["size"] == size
    assert contract["preprocessing"]["mean"] == list(small_model.preprocessing.mean)
    # following the contract by hand gives the same embedding as the shared preprocessing code
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    resized = small_model.preprocessing.resize(image).astype(np.float32) / 255.0
    manual = (
        ((resized - contract["preprocessing"]["mean"]) / contract["preprocessing"]["std"])
        .transpose(2, 0, 1)[None]
        .astype(np.float32)
    )
    assert np.allclose(
        onnx_embedder(exported)(manual), torch_embedder(small_model)(small_model.preprocessing(image)[None]), atol=1e-4
    )


def test_contract_that_disagrees_with_the_model_is_refused(exported):
    path = contract_path(exported)
    contract = json.loads(path.read_text())
    contract["output"]["shape"] = ["batch", 128]
    path.write_text(json.dumps(contract))
    with pytest.raises(DocembError, match="output shape"):
        check_contract(exported)


def test_contract_of_a_changed_model_file_is_refused(exported):
    exported.write_bytes(exported.read_bytes() + b"\0")
    with pytest.raises(DocembError, match="sha256"):
        check_contract(exported)


def test_missing_contract_is_a_clear_error(tmp_path):
    with pytest.raises(DocembError, match="contract missing"):
        read_contract(tmp_path / "nothing.onnx")


def test_model_card_says_where_the_model_came_from_and_what_stayed_float(small_model, exported):
    from docemb.contract import card_path

    quantization = {
        "scheme": "onnxruntime static QDQ int8",
        "weights": "int8 symmetric per-channel",
        "activations": "uint8 asymmetric per-tensor",
        "calibration": {"method": "percentile", "images": 128, "folders": ["data/train", "realdocs/train"]},
        "drift": {"cos_mean": 0.9957, "cos_min": 0.9745},
        "drift_target": {"cos_mean": 0.99, "cos_min": 0.97},
        "float_nodes": [{"name": "/backbone/blocks.1/blocks.1.0/conv_dw/Conv", "op_type": "Conv"}],
    }
    thresholds = {
        "measured_on": "float model",
        "match": {"threshold": 0.9894, "fpr": 0.01, "tpr": 0.34, "eval_set": "realdocs/eval"},
    }
    write_contract(
        exported, small_model.preprocessing, describe_onnx(exported), {"checkpoint": "ckpt.safetensors"}, quantization, thresholds
    )
    card = card_path(exported).read_text()
    assert card.startswith(f"# {exported.name}")
    assert "- checkpoint: ckpt.safetensors" in card
    assert "calibration: percentile, 128 images from data/train, realdocs/train" in card
    assert "cosine to float mean 0.9957, min 0.9745 (target mean >= 0.99, min >= 0.97: met)" in card
    assert "kept in float: /backbone/blocks.1/blocks.1.0/conv_dw/Conv (Conv)" in card
    assert "match when cosine >= 0.9894" in card


@pytest.mark.parametrize("damage", ["truncated", "not_safetensors"])
def test_a_broken_checkpoint_is_named_with_exit_2_and_no_traceback(tmp_path, small_model, damage):
    from docemb.model import save_model

    good = tmp_path / "good.safetensors"
    save_model(good, small_model)
    bad = tmp_path / f"{damage}.safetensors"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2] if damage == "truncated" else b"PK\x03\x04 a zip, say")
    result = subprocess.run(
        [sys.executable, "-m", "docemb.export", "--ckpt", str(bad), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr and "checkpoint" in result.stderr
