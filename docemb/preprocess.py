"""The preprocessing contract in code: the one place that turns an RGB image into model input.

Training, evaluation, export checks, calibration and benchmarks all call this, and the contract
JSON written beside every model describes exactly these steps, so a phone app can repeat them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TemplateView:
    """One way a registered template is drawn before embedding: in a grey frame `frame` of each
    side wide, then turned `degrees` anticlockwise. Phone captures come loose and tilted, so each
    template is registered as several such views and a photo scores its best view."""

    frame: float = 0.0
    degrees: float = 0.0

    def __post_init__(self) -> None:
        check_frame(self.frame)
        if not -45 <= self.degrees <= 45:
            raise ValueError(f"a template view turns by at most 45 degrees either way, not {self.degrees}")

    def draw(self, rgb: np.ndarray) -> np.ndarray:
        return rotated(loose_frame(rgb, self.frame), self.degrees)

    @classmethod
    def from_dict(cls, data: dict) -> "TemplateView":
        """A view as contracts and checkpoints write it: {"frame": F, "degrees": D}."""
        return cls(float(data["frame"]), float(data["degrees"]))


@dataclass(frozen=True)
class Preprocessing:
    """Stretch-resize to size x size (PIL bilinear, antialiased), RGB, /255, (x - mean) / std, NCHW.

    Templates (the clean images users register) first get a grey frame `template_frame` of each
    side wide: a capture that alignment leaves loose shows the document smaller than its clean
    image, and the frame draws the template at that scale (docs/search.md). Registered templates
    are embedded as each of `template_views` (none given: the one framed view) and a photo scores
    a template's best view; training frames its clean views by `template_frame`."""

    size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    template_frame: float = 0.0
    template_views: tuple[TemplateView, ...] = ()

    def __post_init__(self) -> None:
        check_frame(self.template_frame)

    @property
    def views(self) -> tuple[TemplateView, ...]:
        """The views each registered template is embedded as."""
        return self.template_views or (TemplateView(self.template_frame),)

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
        return self.template_view(rgb, TemplateView(self.template_frame))

    def template_inputs(self, rgb: np.ndarray) -> np.ndarray:
        """A registered template at the model's size, once per view: (views, size, size, 3) uint8."""
        small = fit_within(rgb, 2 * self.size) if any(view.degrees for view in self.views) else rgb
        return np.stack([self.template_view(small if view.degrees else rgb, view) for view in self.views])

    def template_view(self, rgb: np.ndarray, view: TemplateView) -> np.ndarray:
        """A template at the model's size as `view` draws it. A turned view is drawn from a copy
        at most twice the model's size: a full-page scan turned at full size would cost a second
        per view, for pixels the resize then drops."""
        return self.resize(view.draw(fit_within(rgb, 2 * self.size) if view.degrees else rgb))

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
            "template_views": [asdict(view) for view in self.views],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        """Contracts written before templates were framed have no `template_frame` (0), those
        before views no `template_views` (the one framed view)."""
        frame = float(data.get("template_frame", 0.0))
        views = tuple(TemplateView.from_dict(v) for v in data.get("template_views", []))
        if views == (TemplateView(frame),):
            views = ()
        return cls(
            size=int(data["size"]), mean=tuple(data["mean"]), std=tuple(data["std"]), template_frame=frame, template_views=views
        )


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


def fit_within(rgb: np.ndarray, side: int) -> np.ndarray:
    """The image shrunk (aspect kept, sides rounded half to even; PIL bilinear, antialiased) so
    that its longer side is at most `side`; as it is when it already fits."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def rotated(rgb: np.ndarray, degrees: float, grey: int = 128) -> np.ndarray:
    """The image turned `degrees` anticlockwise on a grey canvas just large enough to hold it:
    a template drawn as tilted as phone captures are. Bilinear, with grey beyond the edges; written
    out (not PIL's rotate) so that the Android core can repeat it exactly (docs/contract.md)."""
    if degrees == 0:
        return rgb
    h, w = rgb.shape[:2]
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    out_w = math.ceil(abs(w * cos) + abs(h * sin) - 1e-9)
    out_h = math.ceil(abs(h * cos) + abs(w * sin) - 1e-9)
    dx = (np.arange(out_w, dtype=np.float64) + 0.5 - out_w / 2)[None, :]
    dy = (np.arange(out_h, dtype=np.float64) + 0.5 - out_h / 2)[:, None]
    # source position of each output pixel centre, in a copy padded by one grey pixel
    sx = np.clip(cos * dx - sin * dy + w / 2 - 0.5 + 1, 0, w + 1)
    sy = np.clip(sin * dx + cos * dy + h / 2 - 0.5 + 1, 0, h + 1)
    x0, y0 = np.minimum(sx.astype(np.int64), w), np.minimum(sy.astype(np.int64), h)  # floor: both >= 0
    fx, fy = (sx - x0).reshape(-1, 1), (sy - y0).reshape(-1, 1)
    stride = w + 2
    flat = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), constant_values=grey).reshape(-1, 3).astype(np.float64)
    i = (y0 * stride + x0).reshape(-1)
    top = flat[i] * (1 - fx) + flat[i + 1] * fx
    bottom = flat[i + stride] * (1 - fx) + flat[i + stride + 1] * fx
    return np.floor(top * (1 - fy) + bottom * fy + 0.5).astype(np.uint8).reshape(out_h, out_w, 3)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocessing",
    "TemplateView",
    "centre_crop",
    "fit_within",
    "check_crop",
    "check_frame",
    "loose_frame",
    "rotated",
]
