"""The 24-class expansion, the class-batch sampler (seeded, resumable, split across ranks) and the capture augmentation."""

import numpy as np
import pytest
import torch

from docemb.preprocess import Preprocessing
from docemb.train.data import ClassBatchSampler, ExpandedTemplates
from docemb.train.expansion import VARIANTS, split_label, variant_image, variant_label


def asymmetric(h: int = 6, w: int = 4) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_every_variant_of_an_asymmetric_image_is_distinct():
    image = asymmetric()
    variants = [variant_image(image, k).tobytes() + bytes(variant_image(image, k).shape) for k in range(VARIANTS)]
    assert len(set(variants)) == VARIANTS


def test_variant_geometry_matches_the_documented_order():
    image = asymmetric()
    assert np.array_equal(variant_image(image, 0), image)
    assert np.array_equal(variant_image(image, 1), np.rot90(image, 1))
    assert np.array_equal(variant_image(image, 4), image[:, ::-1])
    assert np.array_equal(variant_image(image, 8), image[:3])  # top half, as is
    assert np.array_equal(variant_image(image, 16), image[3:])  # bottom half, as is
    assert np.array_equal(variant_image(image, 23), np.rot90(image[3:, ::-1], 3))


def test_labels_are_unique_in_range_and_invertible():
    images = [asymmetric() for _ in range(5)]
    dataset = ExpandedTemplates(images, Preprocessing(size=32), num_variants=24, augment="none")
    labels = [dataset[i][1] for i in range(len(dataset))]
    assert dataset.num_classes == 5 * 24
    assert sorted(labels) == list(range(5 * 24))
    for label in labels:
        image_index, k = split_label(label)
        assert variant_label(image_index, k) == label
        assert 0 <= image_index < 5 and 0 <= k < 24


def test_sample_is_the_variant_its_label_names():
    images = [np.random.default_rng(i).integers(0, 255, (40, 24, 3), dtype=np.uint8) for i in range(3)]
    prep = Preprocessing(size=32)
    dataset = ExpandedTemplates(images, prep, augment="none", work_size=32)
    tensor, label = dataset[2 * 24 + 13]
    image_index, k = split_label(label)
    expected = prep(prep.resize(variant_image(images[image_index], k)))
    assert np.allclose(tensor.numpy(), expected)


def test_expansion_can_be_switched_off():
    dataset = ExpandedTemplates([asymmetric()] * 4, Preprocessing(size=32), num_variants=1, augment="none")
    assert dataset.num_classes == 4
    assert [dataset[i][1] for i in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError):
        ExpandedTemplates([asymmetric()], Preprocessing(size=32), num_variants=8)


def test_out_of_range_variant_is_refused():
    with pytest.raises(ValueError):
        variant_label(0, 24)
    with pytest.raises(ValueError):
        variant_image(asymmetric(), -1)


def classes(batch: list[tuple[int, int]]) -> list[int]:
    return [c for c, _seed in batch]


def test_class_batches_repeat_each_class_once_per_view_each_with_its_own_seed():
    sampler = ClassBatchSampler(num_classes=100, batch_size=8, views=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 25
    for batch in batches:
        drawn = classes(batch)
        assert len(drawn) == 8
        assert sorted(set(drawn)) == sorted(drawn[::2]) and drawn[::2] == drawn[1::2]
    assert sorted(c for b in batches for c in classes(b)[::2]) == list(range(100))
    seeds = [seed for b in batches for _c, seed in b]
    assert len(set(seeds)) == len(seeds)  # two views of a class are distorted differently


def test_an_epoch_is_fixed_by_seed_and_epoch_and_can_start_part_way():
    sampler = ClassBatchSampler(num_classes=100, batch_size=8, views=2, seed=5)
    sampler.set_epoch(3)
    epoch3 = list(sampler)
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(sampler) == epoch3
    sampler.set_epoch(3, skip=10)
    assert list(sampler) == epoch3[10:]  # a run resumed after 10 batches continues exactly
    sampler.set_epoch(4)
    assert list(sampler) != epoch3


def test_a_seeded_sample_is_the_same_whenever_it_is_made(synth_train):
    from docemb.imageio import list_images, load_images

    images, _ = load_images(list_images(synth_train), max_side=96)
    dataset = ExpandedTemplates(images, Preprocessing(size=64), work_size=72)
    first, label = dataset[(30, 777)]
    dataset[(31, 778)]  # other draws in between change nothing
    again, _ = dataset[(30, 777)]
    assert label == 30 and torch.equal(first, again)
    assert not torch.equal(first, dataset[(30, 778)][0])


def test_ranks_split_each_global_batch_without_overlap():
    single = list(ClassBatchSampler(num_classes=100, batch_size=8, views=2, world_size=1))
    per_rank = [list(ClassBatchSampler(num_classes=100, batch_size=8, views=2, rank=r, world_size=2)) for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 100 // 8
    for step, (a, b) in enumerate(zip(*per_rank)):
        assert not set(classes(a)) & set(classes(b))
        assert a + b == single[2 * step] + single[2 * step + 1]


@pytest.mark.parametrize("augment", ["capture", "capture-heavy"])
def test_capture_augmentation_puts_a_background_at_the_edges(synth_train, augment):
    from docemb.imageio import list_images, load_images

    images, _ = load_images(list_images(synth_train), max_side=96)
    prep = Preprocessing(size=64)
    clean = ExpandedTemplates(images, prep, augment="none", work_size=72)
    captured = ExpandedTemplates(images, prep, augment=augment, work_size=72)
    assert torch.equal(captured[(24, 5)][0], captured[(24, 5)][0])  # seeded
    edges = [(captured[(24, s)][0] - clean[(24, s)][0])[..., :, :2].abs().mean() for s in range(8)]
    assert float(np.median(edges)) > 0.3  # about a third of a standard deviation: not the page's own border


def test_clean_share_shows_that_share_of_draws_as_registered(synth_train):
    from docemb.imageio import list_images, load_images

    images, _ = load_images(list_images(synth_train), max_side=96)
    prep = Preprocessing(size=64)
    clean = ExpandedTemplates(images, prep, augment="none", work_size=72)
    captured = ExpandedTemplates(images, prep, augment="capture", work_size=72)
    mixed = ExpandedTemplates(images, prep, augment="capture", work_size=72, clean_share=0.3)
    draws = [(24 + s % 5, s) for s in range(200)]
    as_registered = [torch.equal(mixed[d][0], clean[d][0]) for d in draws]
    assert 0.2 < np.mean(as_registered) < 0.4
    for draw, registered in zip(draws[:40], as_registered):
        if not registered:  # an augmented draw is the one a run without clean views makes
            assert torch.equal(mixed[draw][0], captured[draw][0])
    with pytest.raises(ValueError, match="clean_share"):
        ExpandedTemplates(images, prep, clean_share=1.0)


def test_clean_views_are_framed_as_templates_are_registered(synth_train):
    from docemb.imageio import list_images, load_images

    images, _ = load_images(list_images(synth_train), max_side=96)
    grey = Preprocessing(size=64).normalize(np.full((1, 1, 3), 128, np.uint8))[:, 0, 0]
    plain = ExpandedTemplates(images, Preprocessing(size=64), augment="none")[30][0]
    framed = ExpandedTemplates(images, Preprocessing(size=64, template_frame=0.1), augment="none")[30][0]
    border = torch.cat([framed[:, :5].flatten(1), framed[:, -5:].flatten(1), framed[:, :, :5].flatten(1)], dim=1)
    assert torch.allclose(border, torch.from_numpy(grey)[:, None], atol=1e-6)  # rows and columns of mid-grey
    assert not torch.allclose(plain[:, :5], framed[:, :5])


def test_clean_views_are_drawn_as_any_of_the_registered_views(synth_train):
    from docemb.imageio import list_images, load_images
    from docemb.preprocess import TemplateView

    images, _ = load_images(list_images(synth_train), max_side=96)
    views = (TemplateView(0.05, 0), TemplateView(0.0, 6), TemplateView(0.1, -6))
    prep = Preprocessing(size=64, template_views=views)
    mixed = ExpandedTemplates(images, prep, augment="capture", work_size=72, clean_share=0.5)
    seen = []
    for seed in range(40):
        index = 24 + seed % 7
        sample = mixed[(index, seed)][0].numpy()
        registered = prep.normalize(prep.template_inputs(variant_image(images[index // 24], index % 24)))
        matches = [v for v in range(len(views)) if np.array_equal(sample, registered[v])]
        seen += matches[:1]
    assert 10 < len(seen) < 30  # about half the draws are clean
    assert set(seen) == {0, 1, 2}  # each view shows up, turned ones too
