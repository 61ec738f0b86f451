"""PartialFC: sampled centres with every positive kept, margins, imprinting, sparse centre steps."""

import math

import pytest
import torch
import torch.nn.functional as F

from docemb.train.margins import CombinedMargin, build_margin
from docemb.train.partial_fc import PartialFC


def make_pfc(num_classes=1000, dim=16, sample_rate=0.05, margin=None, imprint=False):
    torch.manual_seed(0)
    return PartialFC(num_classes, dim, margin or build_margin("cosface", 32.0, 0.25), sample_rate, imprint=imprint)


@pytest.mark.parametrize("seed", range(5))
def test_positives_are_always_sampled_and_labels_remap_to_them(seed):
    pfc = make_pfc(sample_rate=0.02)
    torch.manual_seed(seed)
    labels = torch.randint(0, 1000, (64,))
    index, target = pfc.sample(labels)
    assert len(index) == max(20, labels.unique().numel())
    assert set(labels.tolist()) <= set(index.tolist())
    assert torch.equal(index[target], labels)
    assert torch.all(index[1:] > index[:-1])  # sorted, no repeats


def test_all_positives_kept_when_they_exceed_the_sample():
    pfc = make_pfc(sample_rate=0.01)  # 10 centres
    labels = torch.arange(0, 1000, 10)  # 100 distinct positives
    index, target = pfc.sample(labels)
    assert torch.equal(index, labels)
    assert torch.equal(target, torch.arange(100))


def test_full_sample_equals_plain_margin_softmax():
    pfc = make_pfc(num_classes=50, sample_rate=1.0)
    embeddings = torch.randn(8, 16)
    labels = torch.randint(0, 50, (8,))
    cosine = F.normalize(embeddings) @ F.normalize(pfc.weight).T
    logits = cosine.clone()
    logits[torch.arange(8), labels] -= 0.25
    expected = F.cross_entropy(32.0 * logits, labels)
    assert torch.allclose(pfc(embeddings, labels), expected, atol=1e-5)


def test_fixed_centres_stay_put_and_the_loss_is_the_margin_softmax_against_them():
    pfc = make_pfc(num_classes=50, sample_rate=1.0, imprint=True)
    centres = F.normalize(torch.randn(50, 16))
    pfc.fix_centres(centres)
    embeddings = torch.randn(8, 16, requires_grad=True)
    labels = torch.randint(0, 50, (8,))
    loss = pfc(embeddings, labels)
    loss.backward()
    pfc.step_centres(1.0)
    assert torch.equal(pfc.weight, centres)  # neither imprinted by the batch nor stepped
    assert embeddings.grad.abs().sum() > 0
    logits = F.normalize(embeddings.detach()) @ centres.T
    logits[torch.arange(8), labels] -= 0.25
    assert loss.item() == pytest.approx(F.cross_entropy(32.0 * logits, labels).item(), abs=1e-5)
    with pytest.raises(ValueError, match="centres must be 50 x 16"):
        pfc.fix_centres(torch.randn(49, 16))


def test_only_sampled_centres_get_gradient():
    pfc = make_pfc(sample_rate=0.05)
    labels = torch.randint(0, 1000, (16,))
    embeddings = torch.randn(16, 16)
    torch.manual_seed(1)
    index, _ = pfc.sample(labels)
    torch.manual_seed(1)  # the same draw inside forward
    pfc(embeddings, labels).backward()
    touched = pfc.centre_grad().abs().sum(dim=1).nonzero().flatten()
    assert set(touched.tolist()) <= set(index.tolist())
    assert set(labels.tolist()) <= set(touched.tolist())


def view_mean(embeddings: torch.Tensor) -> torch.Tensor:
    return F.normalize(F.normalize(embeddings).sum(0), dim=0)


@pytest.mark.parametrize("momentum", [0.0, 0.5, 1.0])
def test_centres_are_imprinted_with_the_mean_of_their_views(momentum):
    pfc = make_pfc(num_classes=100, sample_rate=0.1, imprint=True)
    pfc.imprint_momentum = momentum
    before = pfc.weight.detach().clone()
    labels = torch.tensor([7, 7, 7, 42, 42, 42])
    first = torch.randn(6, 16)
    pfc(first, labels)
    for label, rows in ((7, slice(0, 3)), (42, slice(3, 6))):  # met first: the mean, whatever the momentum
        assert torch.allclose(pfc.weight[label], view_mean(first[rows]), atol=1e-6)
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[[7, 42]] = False
    assert torch.equal(pfc.weight[untouched], before[untouched])
    assert pfc.imprinted.sum() == 2

    second = torch.randn(6, 16)
    pfc(second, labels)  # met again: the old centre keeps `momentum` of its place
    expected = F.normalize(momentum * view_mean(first[:3]) + (1 - momentum) * view_mean(second[:3]), dim=0)
    assert torch.allclose(pfc.weight[7], expected, atol=1e-6)

    pfc.eval()
    pfc(torch.randn(2, 16), torch.tensor([1, 2]))  # evaluation never imprints
    assert pfc.imprinted.sum() == 2


def test_labels_out_of_range_are_refused():
    pfc = make_pfc()
    with pytest.raises(ValueError, match="0..999"):
        pfc.sample(torch.tensor([0, 1000]))


def test_cosface_and_arcface_change_only_the_target_logit():
    cosine = torch.tensor([[0.5, 0.2, -0.1], [0.1, 0.9, 0.3]])
    target = torch.tensor([0, 1])
    cos = CombinedMargin(s=10.0, m3=0.2)(cosine, target)
    assert torch.allclose(cos, 10 * torch.tensor([[0.3, 0.2, -0.1], [0.1, 0.7, 0.3]]))
    arc = CombinedMargin(s=1.0, m2=0.3)(cosine, target)
    assert math.isclose(arc[0, 0].item(), math.cos(math.acos(0.5) + 0.3), rel_tol=1e-5)
    assert math.isclose(arc[1, 1].item(), math.cos(math.acos(0.9) + 0.3), rel_tol=1e-5)
    assert torch.equal(arc[0, 1:], cosine[0, 1:])


def test_arcface_stays_monotonic_past_pi():
    margin = CombinedMargin(s=1.0, m2=0.5)
    cos = torch.linspace(-1, 1, 201).unsqueeze(1)
    out = margin(cos, torch.zeros(201, dtype=torch.long)).flatten()
    assert torch.all(out[1:] >= out[:-1] - 1e-6)


def test_step_centres_moves_only_the_sampled_rows_by_their_gradient():
    pfc = make_pfc(sample_rate=0.05, imprint=False)
    before = pfc.weight.detach().clone()
    labels = torch.randint(0, 1000, (16,))
    pfc(torch.randn(16, 16), labels).backward()
    grad = pfc.centre_grad()
    assert grad.abs().sum() > 0
    pfc.step_centres(0.5)
    assert torch.allclose(pfc.weight, before - 0.5 * grad, atol=1e-7)
    pfc.step_centres(0.5)  # no new backward: nothing moves
    assert torch.allclose(pfc.weight, before - 0.5 * grad, atol=1e-7)
    assert not pfc.weight.requires_grad  # the optimizer never sees the dense centres


def test_dense_update_leaves_the_centres_to_the_optimizer():
    pfc = PartialFC(1000, 16, build_margin("cosface", 32.0, 0.25), 0.05, imprint=False, sparse_update=False)
    labels = torch.randint(0, 1000, (16,))
    pfc(torch.randn(16, 16), labels).backward()
    assert pfc.weight.requires_grad and pfc.weight.grad is not None
    assert torch.equal(pfc.centre_grad(), pfc.weight.grad)
