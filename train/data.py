"""Training data: template images from folders, expanded to 24 classes each, photo-augmented."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from docemb.photo import capture_augmentation, distort, loose_capture, photo_distortion
from docemb.preprocess import Preprocessing, TemplateView
from docemb.train.config import AUGMENTATIONS, check_clean_share
from docemb.train.expansion import variant_image


class ExpandedTemplates(Dataset):
    """Sample i is variant i % num_variants of template i // num_variants, label i.

    Variants are cut from the clean template, stretched to `work_size` (a little above the
    model's input, so distortion acts on more pixels than the model sees), distorted, then
    preprocessed exactly as at inference. `augment="capture"` first puts the variant on another
    image of the pool as a loose crop would (background at the edges), then applies the capture
    pipeline (`"capture-heavy"`: more occluders, glare and colour casts); `"photo"` is the older,
    milder photo pipeline; `"none"` trains on clean variants.

    `clean_share` of the seeded draws skip the augmentation and show the variant as registered:
    as one of the preprocessing's template views, drawn at random (framed, turned and resized as
    `Preprocessing.template_inputs` does). Users register clean templates, and a model that has
    only seen captures puts a clean template away from its own captures (docs/training.md,
    "Clean views").
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        preprocessing: Preprocessing,
        num_variants: int = 24,
        augment: str = "capture",
        work_size: int = 160,
        seed: int = 0,
        clean_share: float = 0.0,
    ) -> None:
        if num_variants not in (1, 24):
            raise ValueError("num_variants must be 24 (full expansion) or 1 (no expansion)")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {augment!r}")
        check_clean_share(clean_share)
        self.images = images
        self.preprocessing = preprocessing
        self.num_variants = num_variants
        self.work = Preprocessing(size=work_size)
        self.augment = augment
        self.clean_share = clean_share
        pipelines = {
            "capture": capture_augmentation,
            "capture-heavy": lambda seed: capture_augmentation(seed, heavy=True),
            "photo": lambda seed: photo_distortion("medium", seed=seed),
        }
        self.pipeline = pipelines[augment](seed) if augment != "none" else None

    @property
    def num_classes(self) -> int:
        return len(self.images) * self.num_variants

    def __len__(self) -> int:
        return self.num_classes

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """`item` is a class index, or (class index, augmentation seed) as ClassBatchSampler
        yields it: a seeded sample is the same whichever worker makes it and whenever."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        image_index, k = divmod(index, self.num_variants)
        variant = variant_image(self.images[image_index], k)
        if self.pipeline is None:
            return torch.from_numpy(self.preprocessing.normalize(self.preprocessing.template(variant))), index
        view = self._clean_view(seed)
        if view is not None:  # as registered
            return torch.from_numpy(self.preprocessing.normalize(self.preprocessing.template_view(variant, view))), index
        image = self.work.resize(variant)
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        if self.augment.startswith("capture"):
            rng = np.random.default_rng(seed)
            background = self.images[int(rng.integers(len(self.images)))]
            image = loose_capture(image, background, rng)
        image = distort(image, self.pipeline)
        return torch.from_numpy(self.preprocessing(image)), index

    def _clean_view(self, seed: int | None) -> TemplateView | None:
        """The template view this draw shows, or None where it is a capture: from a stream of
        its own, so the augmentation's draws are the same whatever the share."""
        if not self.clean_share:
            return None
        rng = np.random.default_rng(None if seed is None else (seed, 1))
        if rng.random() >= self.clean_share:
            return None
        views = self.preprocessing.views
        return views[int(rng.integers(len(views)))]


class ClassBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of `batch_size // views` distinct classes, each drawn `views` times.

    With one sample per class per epoch a class centre and its images meet once an epoch, and
    short runs learn little. Several differently distorted views of a class in the same batch
    pull towards the same centre at once, so invariance to photo distortion is learned from
    step one.

    Each item is (class, augmentation seed). Order and seeds follow only from (seed, epoch), so
    a run resumed in the middle of an epoch (`set_epoch(epoch, skip=batches_done)`) draws
    exactly the batches the uninterrupted run would have, whatever the number of workers.

    Under torch.distributed every rank draws the same order and takes its own slice of each
    global batch, so ranks never repeat each other's classes within a step.

    `class_weights` (one per class) scale how often a class is drawn per epoch; an epoch is then
    round(sum(weights)) draws, sampled in proportion to the weights, or `draws` when given (so
    runs on different data train for the same number of steps).
    """

    def __init__(
        self,
        num_classes: int,
        batch_size: int,
        views: int = 2,
        rank: int = 0,
        world_size: int = 1,
        class_weights: np.ndarray | None = None,
        seed: int = 0,
        draws: int | None = None,
    ) -> None:
        if views < 1 or batch_size % views:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of views ({views})")
        self.num_classes = num_classes
        self.classes_per_batch = batch_size // views
        self.views = views
        self.rank, self.world_size = rank, world_size
        weights = np.ones(num_classes) if class_weights is None else class_weights
        uniform = draws is None and np.all(weights == 1)
        self.weights = None if uniform else torch.as_tensor(weights, dtype=torch.float64)
        self.draws = num_classes if self.weights is None else draws or int(round(float(self.weights.sum())))
        self.seed = seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Draw `epoch`'s order; start after its first `skip` batches (a resumed run)."""
        if not 0 <= skip <= len(self):
            raise ValueError(f"cannot skip {skip} of {len(self)} batches")
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return self.draws // (self.classes_per_batch * self.world_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.num_classes, generator=generator)
        else:
            replacement = bool(self.draws > self.num_classes or self.weights.max() > 1)
            order = torch.multinomial(self.weights, self.draws, replacement=replacement, generator=generator)
        # one seed per draw of the epoch, on every rank alike; each view takes its own
        seeds = torch.randint(0, 2**31 - 1, (len(order), self.views), generator=generator)
        step = self.classes_per_batch * self.world_size
        for i in range(self.skip, len(self)):
            start = i * step + self.rank * self.classes_per_batch
            rows = slice(start, start + self.classes_per_batch)
            classes = order[rows].repeat_interleave(self.views).tolist()
            yield list(zip(classes, seeds[rows].flatten().tolist()))
