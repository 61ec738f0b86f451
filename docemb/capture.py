"""Phone captures for evaluation, written apart from the training augmentation on purpose.

Queries made by the same pipeline that trains the model measure the training distribution, not
the world. This simulation shares no code and no parameters with `docemb.photo`: it places the
document on a desk-like background and renders what an alignment step leaves of a real capture:
a loose quad (background at the edges), rotation and perspective, a finger or pen over part of
the page, glare, a colour cast and vignetting, low light with sensor noise, defocus or hand
shake, and JPEG. Every step is plain numpy/OpenCV driven by one seeded generator, so every model
is scored on the very same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CaptureLevel:
    """How far each capture effect goes at one strength (each drawn uniformly up to its bound)."""

    rotate_deg: float  # in-plane rotation of the document in the frame
    corner_jitter: float  # perspective: each corner moves up to this share of the side
    margin: float  # background visible at the edges, up to this share of the side
    occlusion_p: float  # chance of a finger or pen over the page
    glare_p: float  # chance of a specular highlight
    cast: float  # white-balance gain spread per channel
    dark: float  # low light: exposure down to (1 - dark)
    noise: float  # sensor noise std at full exposure, on 0-1
    blur_px: float  # defocus radius or motion length, in pixels at 512 px
    jpeg_min: int  # lowest JPEG quality


CAPTURE_LEVELS = {
    "mild": CaptureLevel(2.0, 0.02, 0.03, 0.10, 0.10, 0.04, 0.10, 0.010, 1.0, 80),
    "medium": CaptureLevel(5.0, 0.04, 0.06, 0.25, 0.25, 0.08, 0.25, 0.020, 2.0, 60),
    "strong": CaptureLevel(8.0, 0.06, 0.10, 0.45, 0.40, 0.12, 0.45, 0.035, 3.5, 40),
    "hard": CaptureLevel(10.0, 0.08, 0.15, 0.70, 0.60, 0.16, 0.60, 0.050, 5.0, 25),
}
CAPTURE_STRENGTHS = tuple(CAPTURE_LEVELS)


def desk_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A table top: a base colour, low-frequency shading, grain, and a few flat objects."""
    base = rng.uniform(40, 220, size=3)
    low = cv2.resize(rng.normal(0, 1, (4, 4, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image = base + 25 * low
    if rng.random() < 0.5:  # wood-like grain along one axis
        lines = np.sin(np.linspace(0, rng.uniform(20, 80), height if rng.random() < 0.5 else width) + rng.uniform(0, 6))
        grain = lines[:, None] if len(lines) == height else lines[None, :]
        image = image + 12 * grain[..., None]
    for _ in range(int(rng.integers(0, 4))):  # other papers, a phone, a keyboard edge
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(width // 8, width // 2)), int(rng.integers(height // 8, height // 2))
        image[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, size=3)
    image = image + rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _document_quad(width: int, height: int, level: CaptureLevel, rng: np.random.Generator) -> np.ndarray:
    """Where the document's corners land in the output frame (same size as the template)."""
    margin = rng.uniform(0, level.margin, size=4) * np.array([width, height, width, height])  # left, top, right, bottom
    quad = np.array(
        [
            [margin[0], margin[1]],
            [width - margin[2], margin[1]],
            [width - margin[2], height - margin[3]],
            [margin[0], height - margin[3]],
        ],
        dtype=np.float64,
    )
    quad += rng.uniform(-1, 1, size=(4, 2)) * level.corner_jitter * np.array([width, height])
    angle = np.deg2rad(rng.uniform(-level.rotate_deg, level.rotate_deg))
    centre = quad.mean(axis=0)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return ((quad - centre) @ rotation.T + centre).astype(np.float32)


def _finger_or_pen(image: np.ndarray, rng: np.random.Generator) -> None:
    """A skin-toned finger from one edge, or a dark pen across a corner, drawn in place."""
    h, w = image.shape[:2]
    side = int(rng.integers(4))
    along = rng.uniform(0.15, 0.85)
    start = [(along * w, 0), (w, along * h), (along * w, h), (0, along * h)][side]
    inward = [(0, 1), (-1, 0), (0, -1), (1, 0)][side]
    reach = rng.uniform(0.12, 0.30) * min(h, w)
    end = (start[0] + inward[0] * reach, start[1] + inward[1] * reach)
    overlay = image.copy()
    if rng.random() < 0.7:
        skin = np.array([rng.uniform(150, 235), rng.uniform(100, 180), rng.uniform(80, 150)])
        thickness = int(rng.uniform(0.10, 0.18) * min(h, w))
        cv2.line(overlay, tuple(map(int, start)), tuple(map(int, end)), skin.tolist(), thickness, cv2.LINE_AA)
        cv2.circle(overlay, tuple(map(int, end)), thickness // 2, skin.tolist(), -1, cv2.LINE_AA)
    else:
        colour = rng.uniform(0, 80, size=3).tolist()
        end = (start[0] + rng.uniform(-0.6, 0.6) * w, start[1] + inward[1] * 0.6 * h + inward[0] * 0.3 * h)
        cv2.line(overlay, tuple(map(int, start)), tuple(map(int, end)), colour, max(2, int(0.03 * min(h, w))), cv2.LINE_AA)
    soft = cv2.GaussianBlur(overlay, (0, 0), 1.5)
    image[:] = soft


def _glare(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A specular highlight: an elongated bright blob that washes out what is under it."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    sx, sy = rng.uniform(0.04, 0.18) * w, rng.uniform(0.03, 0.10) * h
    angle = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    blob = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return image + rng.uniform(0.5, 1.0) * blob[..., None]


def _blur(image: np.ndarray, level: CaptureLevel, scale: float, rng: np.random.Generator) -> np.ndarray:
    size = level.blur_px * scale * rng.uniform(0.2, 1.0)
    if size < 0.6:
        return image
    radius = int(np.ceil(size))
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1), np.float32)
    if rng.random() < 0.5:  # defocus: a disk
        cv2.circle(kernel, (radius, radius), radius, 1.0, -1, cv2.LINE_AA)
    else:  # hand shake: a line
        angle = rng.uniform(0, np.pi)
        offset = radius * np.array([np.cos(angle), np.sin(angle)])
        cv2.line(kernel, tuple((radius - offset).astype(int)), tuple((radius + offset).astype(int)), 1.0, 1, cv2.LINE_AA)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def simulate_capture(template: np.ndarray, strength: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 capture of `template` as an alignment step would hand it over, same size."""
    if strength not in CAPTURE_LEVELS:
        raise ValueError(f"unknown capture strength {strength!r}; choose one of {', '.join(CAPTURE_STRENGTHS)}")
    level = CAPTURE_LEVELS[strength]
    h, w = template.shape[:2]
    scale = max(h, w) / 512
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(source, _document_quad(w, h, level, rng))
    frame = desk_background(h, w, rng)
    page = cv2.warpPerspective(template, warp, (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), warp, (w, h), flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    image = (alpha * page + (1 - alpha) * frame).astype(np.uint8)
    if rng.random() < level.occlusion_p:
        _finger_or_pen(image, rng)
    light = image.astype(np.float32) / 255
    if rng.random() < level.glare_p:
        light = _glare(light, rng)
    gains = 1 + rng.uniform(-level.cast, level.cast, size=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = 1 - rng.uniform(0, 0.35) * (((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) / 0.5)
    exposure = 1 - rng.uniform(0, level.dark)
    light = np.clip(light * gains * vignette[..., None] * exposure, 0, 1)
    light = _blur(light, level, scale, rng)
    noise_std = level.noise * rng.uniform(0.3, 1.0) / np.sqrt(exposure)  # dim scenes are amplified more
    light = light + rng.normal(0, noise_std, light.shape) * np.sqrt(np.clip(light, 0.02, 1))
    image = (np.clip(light, 0, 1) * 255 + 0.5).astype(np.uint8)
    quality = int(rng.integers(level.jpeg_min, 96))
    ok, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]) if ok else image
