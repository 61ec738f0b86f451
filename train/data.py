"""Training data: template images from folders, expanded to 24 classes each, photo-augmented."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from docemb.imageio import OnError, list_images, load_images
from docemb.photo import distort, photo_distortion
from docemb.preprocess import Preprocessing
from docemb.train.expansion import variant_image


@dataclass
class TemplateSource:
    """The decoded templates of one or more folders; image i is class group i."""

    images: list[np.ndarray]
    paths: list[Path]
    bad_files: int

    def report(self) -> str:
        sizes = np.array([im.shape[:2] for im in self.images])
        folders = sorted({p.parent for p in self.paths})
        return (
            f"{len(self.images)} templates from {len(folders)} folder(s), "
            f"height {sizes[:, 0].min()}-{sizes[:, 0].max()} px, width {sizes[:, 1].min()}-{sizes[:, 1].max()} px"
            + (f", {self.bad_files} unreadable file(s) skipped" if self.bad_files else "")
        )


def load_templates(folders: list[str | Path], max_side: int, on_error: OnError = "raise") -> TemplateSource:
    paths = [p for folder in folders for p in list_images(folder)]
    images, kept = load_images(paths, max_side=max_side, on_error=on_error)
    return TemplateSource(images=images, paths=kept, bad_files=len(paths) - len(kept))


class ExpandedTemplates(Dataset):
    """Sample i is variant i % num_variants of template i // num_variants, label i.

    Variants are cut from the clean template, stretched to `work_size` (a little above the
    model's input, so distortion acts on more pixels than the model sees), photo-distorted, then
    preprocessed exactly as at inference.
    """

    def __init__(
        self,
        images: list[np.ndarray],
        preprocessing: Preprocessing,
        num_variants: int = 24,
        augment: bool = True,
        work_size: int = 160,
        strength: str = "medium",
        seed: int = 0,
    ) -> None:
        if num_variants not in (1, 24):
            raise ValueError("num_variants must be 24 (full expansion) or 1 (no expansion)")
        self.images = images
        self.preprocessing = preprocessing
        self.num_variants = num_variants
        self.work = Preprocessing(size=work_size)
        self.pipeline = photo_distortion(strength, seed=seed) if augment else None

    @property
    def num_classes(self) -> int:
        return len(self.images) * self.num_variants

    def __len__(self) -> int:
        return self.num_classes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image_index, k = divmod(index, self.num_variants)
        image = self.work.resize(variant_image(self.images[image_index], k))
        if self.pipeline is not None:
            image = distort(image, self.pipeline)
        return torch.from_numpy(self.preprocessing(image)), index


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream, derived from torch's per-epoch
    seed, so workers do not repeat each other and a resumed run replays the same samples."""
    info = get_worker_info()
    dataset = info.dataset
    if getattr(dataset, "pipeline", None) is not None:
        dataset.pipeline.set_random_seed(info.seed % 2**32)


class ClassBatchSampler(Sampler[list[int]]):
    """Batches of `batch_size // views` distinct classes, each drawn `views` times.

    With one sample per class per epoch a class centre and its images meet once an epoch, and
    short runs learn little. Two differently distorted views of a class in the same batch pull
    towards the same centre at once, so invariance to photo distortion is learned from step one.

    Under torch.distributed every rank draws the same permutation (same seed) and takes its own
    slice of each global batch, so ranks never repeat each other's classes within a step.
    """

    def __init__(self, num_classes: int, batch_size: int, views: int = 2, rank: int = 0, world_size: int = 1) -> None:
        if views < 1 or batch_size % views:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of views ({views})")
        self.num_classes = num_classes
        self.classes_per_batch = batch_size // views
        self.views = views
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return self.num_classes // (self.classes_per_batch * self.world_size)

    def __iter__(self):
        order = torch.randperm(self.num_classes)  # global RNG: restored on resume, equal on all ranks
        step = self.classes_per_batch * self.world_size
        for i in range(len(self)):
            start = i * step + self.rank * self.classes_per_batch
            yield order[start : start + self.classes_per_batch].repeat_interleave(self.views).tolist()
