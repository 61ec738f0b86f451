import pytest
import torch
import torch.nn.functional as F

from docemb.errors import DocembError
from docemb.train.config import TrainConfig
from docemb.train.spread import DUPLICATE, duplicate_groups, near_pairs, spread_centres


def twins(base: torch.Tensor, cosine: float, generator: torch.Generator) -> torch.Tensor:
    """A unit vector at exactly `cosine` to each unit row of `base`."""
    noise = torch.randn(base.shape, generator=generator)
    orthogonal = F.normalize(noise - (noise * base).sum(1, keepdim=True) * base, dim=1)
    return cosine * base + (1 - cosine**2) ** 0.5 * orthogonal


@pytest.fixture
def centres() -> torch.Tensor:
    """30 independent centres, 10 near-twins of the first ten at 0.97, 5 duplicates of the next five."""
    generator = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(30, 64, generator=generator), dim=1)
    return torch.cat([base, twins(base[:10], 0.97, generator), twins(base[10:15], 0.999, generator)])


def test_near_pairs_finds_each_pair_once_across_blocks(centres):
    first, second = near_pairs(centres, 0.9, DUPLICATE, block=7)
    assert sorted(zip(first.tolist(), second.tolist())) == [(i, 30 + i) for i in range(10)]


def test_duplicate_groups_follow_chains_of_duplicates(centres):
    chain = torch.stack([centres[0], twins(centres[:1], 0.996, torch.Generator().manual_seed(1))[0]])
    chain = torch.cat([chain, twins(chain[1:], 0.996, torch.Generator().manual_seed(2))])  # a ~ b ~ c
    rows = torch.cat([centres, chain])
    group = duplicate_groups(rows)
    assert group[40:45].tolist() == group[10:15].tolist() and group[45] == group[46] == group[47] == group[0]
    assert len(set(group[:40].tolist())) == 40 and int(group.max()) == 39


def test_twins_are_pushed_to_the_cap_and_the_rest_barely_move(centres):
    spread, report = spread_centres(centres, cap=0.8)
    assert (report.groups, report.pairs, report.left) == (40, 10, 0)
    assert torch.allclose(spread.norm(dim=1), torch.ones(len(spread)))
    twin_cosines = (spread[:10] * spread[30:40]).sum(1)
    assert (twin_cosines <= 0.8 + 1e-3).all() and (twin_cosines > 0.7).all()  # down to the cap, not far past
    kept = (spread * centres).sum(1)
    assert (kept[10:30] > 0.9999).all()  # independent centres and the originals of the duplicates
    assert ((spread[10:15] * spread[40:45]).sum(1) > DUPLICATE).all()  # duplicates stay one image


def test_duplicates_with_a_shared_look_alike_stay_one_image():
    generator = torch.Generator().manual_seed(3)
    base = F.normalize(torch.randn(1, 64, generator=generator), dim=1)
    duplicate = twins(base, 0.997, generator)
    look_alikes = torch.cat([twins(base, 0.99, generator), twins(duplicate, 0.96, generator)])  # uneven to the two
    rows = torch.cat([base, duplicate, look_alikes])
    spread, report = spread_centres(rows, cap=0.8)
    assert (report.groups, report.left) == (3, 0)
    assert (spread[0] @ spread[1]).item() > DUPLICATE
    assert 0.75 < (spread[0] @ spread[2]).item() < 0.81  # the cap holds for the group's mean; members sit around it


def test_nothing_near_leaves_the_centres_as_they_are(centres):
    spread, report = spread_centres(centres[:30], cap=0.9)
    assert (report.groups, report.pairs, report.left) == (30, 0, 0)
    assert torch.allclose(spread, centres[:30])


def test_centre_cap_needs_fixed_centres_and_a_cosine_below_duplicates():
    centres = {"data": ["synth:10"], "teacher": "docemb", "teacher_loss": "centres", "num_variants": 1}
    TrainConfig(**centres, centre_cap=0.9).validate()
    for wrong in ({"teacher_loss": "kl"}, {"num_variants": 24}, {"centre_cap": DUPLICATE}, {"centre_cap": 0.0}):
        with pytest.raises(DocembError, match="centre_cap takes teacher_loss centres, num_variants 1"):
            TrainConfig(**{**centres, "centre_cap": 0.9, **wrong}).validate()
