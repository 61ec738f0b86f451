"""BatchNorm folding: the folded head computes the same embedding with no BatchNorm1d left."""

import pytest
import torch
from torch import nn

from docemb.fold import fold_head_batchnorm
from docemb.model import ModelConfig, build_model


def model_with_trained_batchnorm(head_norm: str) -> nn.Module:
    model = build_model(ModelConfig(input_size=64, embedding_dim=32, squeeze_channels=16, head_norm=head_norm), seed=0)
    generator = torch.Generator().manual_seed(1)
    for module in model.head.fc:  # statistics and affine far from identity, as after training
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.normal_(generator=generator)
            module.running_var.uniform_(0.2, 3.0, generator=generator)
            module.weight.data.normal_(generator=generator)
            module.bias.data.normal_(generator=generator)
    return model.eval()


@pytest.mark.parametrize("head_norm,expected", [("ln_bn", 2), ("bn", 2), ("ln", 0)])
def test_folded_head_computes_the_same_embedding(head_norm, expected):
    model = model_with_trained_batchnorm(head_norm)
    folded, count = fold_head_batchnorm(model)
    assert count == expected
    assert not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    images = torch.randn(6, 3, 64, 64)
    with torch.no_grad():
        features = model.backbone(images)[-1]
        assert torch.allclose(model.head(features), folded.head(features), atol=1e-4)
        assert torch.allclose(model(images), folded(images), atol=1e-6)
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == expected  # the original is untouched


def test_folding_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_head_batchnorm(model_with_trained_batchnorm("ln_bn").train())
