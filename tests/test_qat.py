"""Quantization-aware fine-tune (docemb.quantize.qat): it drifts less than post-training int8,
starts from the post-training model, and is refused where it cannot apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("litert_torch", reason="TFLite tools not installed (pip install -e .[tflite])")

from docemb.embedders import torch_embedder  # noqa: E402
from docemb.evaluation import cosine_drift  # noqa: E402
from docemb.litert import delegation, op_counts, tflite_embedder  # noqa: E402
from docemb.quantize.calibration import calibration_inputs, finetune_images  # noqa: E402
from docemb.quantize.qat import QatPlan, QatSettings, distillation_loss  # noqa: E402
from docemb.quantize.tflite import quantize_tflite  # noqa: E402
from docemb.synth import generate  # noqa: E402


def test_distillation_loss_sees_each_embedding_and_the_scores_between_them():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    assert distillation_loss(teacher, teacher, relation_weight=1.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.nn.functional.normalize(teacher + 0.2 * torch.randn_like(teacher), dim=-1)
    pointwise = distillation_loss(student, teacher, relation_weight=0.0)
    assert pointwise.item() > 0 and distillation_loss(student, teacher, relation_weight=1.0).item() > pointwise.item()


@pytest.mark.slow  # 200 fine-tune steps
def test_quantization_aware_fine_tune_drifts_less_than_post_training(trained_model, tmp_path):
    """The last step of issue 4: the same full-integer graph, started from the post-training
    ranges and fine-tuned towards the float model on calibration-pool images (never the
    validation ones), drifts less; the float model is untouched."""
    pool = tmp_path / "pool"
    generate(pool, n=48, seed=2, long_side=160)  # the 8 shared images are too few to learn from
    preprocessing = trained_model.preprocessing
    calibration = calibration_inputs([pool], preprocessing, 24, offset=0)
    validation = calibration_inputs([pool], preprocessing, 24, offset=1, seed=1)
    reference = torch_embedder(trained_model)(validation)

    def drift(path: Path) -> dict:
        return cosine_drift(reference, tflite_embedder(path)(validation))

    post_training = drift(quantize_tflite(trained_model, tmp_path / "ptq.tflite", calibration, float_front_stride=0))
    plan = QatPlan(finetune_images([pool], 24), preprocessing, QatSettings(steps=200, batch_size=16))
    tuned = quantize_tflite(trained_model, tmp_path / "qat.tflite", calibration, float_front_stride=0, qat=plan)
    fine_tuned = drift(tuned)
    # mean and 5th percentile: the minimum of 24 images is one image, and moves either way
    assert fine_tuned["cos_mean"] > post_training["cos_mean"] and fine_tuned["cos_p05"] > post_training["cos_p05"], (
        fine_tuned,
        post_training,
    )
    assert delegation(tuned).partitions == 1
    ops = op_counts(tuned)
    assert ops.get("CONV_2D int8", 0) > 0 and "CONV_2D float32" not in ops
    np.testing.assert_array_equal(torch_embedder(trained_model)(validation), reference)


@pytest.mark.slow  # two int8 conversions of the fake-quantized graph
def test_fine_tune_starts_from_the_post_training_model(trained_model, synth_train, tmp_path):
    """With no steps, the fine-tune path (batch-size-free export, fake-quantize modules, ranges
    copied from histogram calibration) writes the post-training model again."""
    preprocessing = trained_model.preprocessing
    calibration = calibration_inputs([synth_train], preprocessing, 8, offset=0)
    probe = calibration_inputs([synth_train], preprocessing, 8, offset=1, seed=1)
    post_training = quantize_tflite(trained_model, tmp_path / "ptq.tflite", calibration, float_front_stride=0)
    plan = QatPlan(finetune_images([synth_train], 4), preprocessing, QatSettings(steps=0))
    untrained = quantize_tflite(trained_model, tmp_path / "qat0.tflite", calibration, float_front_stride=0, qat=plan)
    same = cosine_drift(tflite_embedder(post_training)(probe), tflite_embedder(untrained)(probe))
    assert same["cos_min"] > 0.9999, same
