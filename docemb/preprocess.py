"""The preprocessing contract in code: the one place that turns an RGB image into model input.

Training, evaluation, export checks, calibration and benchmarks all call this, and the contract
JSON written beside every model describes exactly these steps, so a phone app can repeat them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Stretch-resize to size x size (PIL bilinear, antialiased), RGB, /255, (x - mean) / std, NCHW.

    Templates (the clean images users register) first get a grey frame `template_frame` of each
    side wide: a capture that alignment leaves loose shows the document smaller than its clean
    image, and the frame draws the template at that scale (docs/search.md)."""

    size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    template_frame: float = 0.0

    def __post_init__(self) -> None:
        check_frame(self.template_frame)

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> size x size x 3 uint8. Aspect ratio is not kept: an aligned document
        fills the frame, and stretching keeps every pixel of it."""
        if rgb.shape[:2] == (self.size, self.size):
            return rgb
        image = Image.fromarray(rgb).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, resized: np.ndarray) -> np.ndarray:
        """(N)HWC uint8 at the model's size -> (N)CHW float32 ready for the model."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        scale = 1.0 / (np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1) * 255.0)
        # transposed while still uint8 and computed in place: the same float32 values as
        # (x - mean) * scale in HWC, at a seventh of the memory traffic
        chw = np.moveaxis(resized, -1, -3).astype(np.float32, order="C")
        chw -= mean
        chw *= scale
        return chw

    def denormalize(self, nchw: np.ndarray) -> np.ndarray:
        """The inverse of normalize(), as float32 pixel values 0-255 (still NCHW): what a model
        with the normalisation built in takes."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1) * 255.0
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1) * 255.0
        return (nchw * std + mean).astype(np.float32)

    def template(self, rgb: np.ndarray) -> np.ndarray:
        """A template (not a capture) at the model's size: framed, then resized."""
        return self.resize(loose_frame(rgb, self.template_frame))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.normalize(self.resize(rgb))

    def to_dict(self) -> dict:
        return {
            "size": self.size,
            "resize": "stretch",
            "interpolation": "bilinear (antialiased, as PIL Image.resize)",
            "color_order": "RGB",
            "scale": "1/255",
            "mean": list(self.mean),
            "std": list(self.std),
            "template_frame": self.template_frame,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """Contracts written before templates were framed have no `template_frame`: 0."""
        frame = float(data.get("template_frame", 0.0))
        return cls(size=int(data["size"]), mean=tuple(data["mean"]), std=tuple(data["std"]), template_frame=frame)


def stack_inputs(preprocessing: Preprocessing, images: list[np.ndarray]) -> np.ndarray:
    """Resize a list of RGB arrays to one uint8 NHWC batch (normalise later, per model run)."""
    return np.stack([preprocessing.resize(image) for image in images])


def check_crop(keep: float) -> None:
    if not 0 < keep <= 1:
        raise ValueError(f"a centre crop keeps a share of each side in (0, 1], not {keep}")


def check_frame(share: float) -> None:
    if not 0 <= share < 0.5:
        raise ValueError(f"a loose frame adds a share of each side in [0, 0.5), not {share}")


def centre_crop(rgb: np.ndarray, keep: float) -> np.ndarray:
    """The centre `keep` share of each side. A capture that alignment left loose shows the
    document smaller than its template, with background at the edges; cropping the capture (never
    the template) brings the two back to one scale."""
    check_crop(keep)
    h, w = rgb.shape[:2]
    dy, dx = round(h * (1 - keep) / 2), round(w * (1 - keep) / 2)
    return rgb[dy : h - dy, dx : w - dx]


def loose_frame(rgb: np.ndarray, share: float, grey: int = 128) -> np.ndarray:
    """The image in a grey frame `share` of each side wide: a clean template drawn at the scale
    loosely framed captures show documents at (the other way to bring the two to one scale)."""
    check_frame(share)
    h, w = rgb.shape[:2]
    dy, dx = round(h * share), round(w * share)
    framed = np.full((h + 2 * dy, w + 2 * dx, 3), grey, np.uint8)
    framed[dy : dy + h, dx : dx + w] = rgb
    return framed


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "centre_crop",
    "check_crop",
    "check_frame",
    "loose_frame",
    "stack_inputs",
]
