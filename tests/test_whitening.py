"""Learned whitening: the head's outputs on the reference come out white, the whitened model
saves, loads and exports like any other, and whitening twice is refused."""

import numpy as np
import pytest
import torch

from docemb.errors import DocembError
from docemb.imageio import list_images, read_rgb
from docemb.model import load_model, save_model
from docemb.whitening import head_outputs, whitened, whitening


def test_whitening_gives_unit_variance_along_every_direction():
    rng = np.random.default_rng(0)
    outputs = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8)) + 5.0  # correlated, far from the origin
    mean, matrix = whitening(outputs, shrink=0.0)
    white = (outputs - mean) @ matrix
    np.testing.assert_allclose(np.cov(white.T), np.eye(8), atol=1e-6)
    with pytest.raises(DocembError, match="at least 16 reference views"):
        whitening(outputs[:10])


def test_a_whitened_model_spreads_its_scores_and_travels_like_any_model(trained_model, synth_train, tmp_path):
    # trained: an untrained head's outputs barely vary, and whitening them would scale up rounding noise
    images = [read_rgb(p, 160) for p in list_images(synth_train)] * 4  # 32 images, 64 views for 32 dims
    model = whitened(trained_model, images, shrink=0.1)
    assert model.config.whitening and not trained_model.config.whitening
    before = torch.nn.functional.normalize(torch.from_numpy(head_outputs(trained_model, images[:8])), dim=1)
    after = torch.nn.functional.normalize(torch.from_numpy(head_outputs(model, images[:8])), dim=1)
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    assert (after @ after.T)[off_diagonal].mean() < (before @ before.T)[off_diagonal].mean()  # scores spread
    save_model(tmp_path / "w.safetensors", model)
    again = load_model(tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(again(x), model(x), atol=1e-6)
    from docemb.export.onnx_export import export_onnx, verify_onnx

    path = export_onnx(again, tmp_path / "w.onnx")
    assert verify_onnx(again, path, x.numpy()) < 1e-4
    with pytest.raises(DocembError, match="whitened already"):
        whitened(again, images)
