"""Weight selection: a narrower PP-LCNet starts from evenly spaced channels of a wider one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from docemb.errors import DocembError
from docemb.model import ModelConfig, build_model, narrowed_model, narrowed_state_dict

WIDE = ModelConfig(arch="lcnet_100", input_size=64, embedding_dim=32, squeeze_channels=16)


@pytest.fixture(scope="module")
def wide():
    return build_model(WIDE, seed=0).eval()


def test_the_same_width_keeps_every_tensor(wide):
    same = narrowed_model(wide, WIDE, "wide")
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), wide.state_dict().values()))


def test_a_layers_kept_outputs_are_the_next_layers_kept_inputs(wide):
    narrow = narrowed_model(wide, dataclasses.replace(WIDE, arch="lcnet_050"), "wide")
    last = wide.backbone.blocks[-1][-1]
    kept = torch.linspace(0, last.bn2.weight.numel() - 1, narrow.backbone.blocks[-1][-1].bn2.weight.numel()).round().long()
    assert torch.equal(narrow.backbone.blocks[-1][-1].bn2.weight, last.bn2.weight[kept])
    # the head's squeeze conv keeps all its outputs and reads exactly the channels the backbone kept
    assert torch.equal(narrow.head.squeeze.weight, wide.head.squeeze.weight[:, kept])
    assert torch.equal(narrow.head.fc[0].weight, wide.head.fc[0].weight)
    stem = narrow.backbone.conv_stem.weight
    assert torch.equal(stem, wide.backbone.conv_stem.weight[torch.linspace(0, 15, stem.shape[0]).round().long()])
    assert narrow(torch.rand(2, 3, 64, 64)).shape == (2, 32)


def test_a_wider_or_foreign_target_is_refused(wide):
    narrow = build_model(dataclasses.replace(WIDE, arch="lcnet_050"), seed=0)
    with pytest.raises(DocembError, match="a lcnet_050 model cannot start a lcnet_100 one"):
        narrowed_model(narrow, WIDE, "narrow")
    with pytest.raises(DocembError, match="only narrower PP-LCNets"):
        narrowed_model(wide, dataclasses.replace(WIDE, arch="mobilenetv3_small_050"), "wide")


def test_a_channel_count_that_would_narrow_two_ways_is_refused():
    wide = {"a": torch.zeros(4, 2), "b": torch.zeros(4, 3)}
    with pytest.raises(DocembError, match="4 channels narrow to both 2 and 3"):
        narrowed_state_dict(wide, {"a": torch.zeros(2, 2), "b": torch.zeros(3, 3)}, "x")
    with pytest.raises(DocembError, match="cannot narrow"):
        narrowed_state_dict(wide, {"a": torch.zeros(5, 2), "b": torch.zeros(4, 3)}, "x")
