"""Phone-photo simulation: what a document looks like after capture and imperfect alignment.

`photo_distortion` is the mild photo pipeline that calibration and golden files use;
`loose_capture` + `capture_augmentation` train for real captures. Geometry stays within about
ten degrees and a fifth of the frame, so a sample never turns into another of its 24 classes.
Evaluation queries come from `docemb.capture`, written apart.
"""

from __future__ import annotations

import cv2
import numpy as np

import docemb.torchvision_fix  # noqa: F401  (albumentations may import torchvision)

# isort: split
import albumentations as A

STRENGTHS = {"mild": 0.5, "medium": 1.0, "strong": 1.5}


def photo_distortion(strength: float | str = "medium", seed: int | None = None) -> A.Compose:
    """An albumentations pipeline for photo-like distortion; call it as `pipe(image=rgb)["image"]`."""
    s = STRENGTHS[strength] if isinstance(strength, str) else float(strength)
    return A.Compose(
        [
            # alignment leftovers: the detected quad is a little off, the crop a little loose or tight
            A.Perspective(scale=(0.01 * s, 0.05 * s), border_mode=cv2.BORDER_REPLICATE, p=0.8),
            A.Affine(
                rotate=(-4 * s, 4 * s),
                scale=(1 - 0.06 * s, 1 + 0.06 * s),
                translate_percent=(-0.03 * s, 0.03 * s),
                border_mode=cv2.BORDER_REPLICATE,
                p=0.8,
            ),
            A.CropAndPad(percent=(-0.04 * s, 0.04 * s), border_mode=cv2.BORDER_REPLICATE, p=0.5),
            # light and colour: exposure, white balance, a hand or phone shadow
            A.RandomBrightnessContrast(brightness_limit=0.25 * s, contrast_limit=0.25 * s, p=0.8),
            A.HueSaturationValue(hue_shift_limit=6 * s, sat_shift_limit=20 * s, val_shift_limit=10 * s, p=0.5),
            A.RandomGamma(gamma_limit=(100 - 20 * s, 100 + 20 * s), p=0.3),
            A.RandomShadow(
                shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2), shadow_intensity_range=(0.1, 0.1 + 0.3 * s), p=0.3 * s
            ),
            # optics and sensor: focus, hand shake, noise, compression
            A.OneOf(
                [
                    A.GaussianBlur(sigma_limit=(0.2, 0.6 + 0.6 * s)),
                    A.MotionBlur(blur_limit=(3, 3 + 2 * int(round(s)))),
                    A.Downscale(scale_range=(max(0.25, 0.75 - 0.3 * s), 0.9)),
                ],
                p=0.6,
            ),
            A.GaussNoise(std_range=(0.01, 0.02 + 0.03 * s), p=0.5),
            A.ImageCompression(quality_range=(int(max(20, 90 - 40 * s)), 95), p=0.7),
        ],
        seed=seed,
    )


def distort(image: np.ndarray, pipeline: A.Compose) -> np.ndarray:
    return pipeline(image=image)["image"]


def capture_augmentation(seed: int | None = None, heavy: bool = False) -> A.Compose:
    """Training augmentation for phone captures, after `loose_capture` has put the document on
    a background: rotation up to about 10 degrees, occluders, sun-flare glare, colour casts,
    uneven light, defocus or shake, sensor noise and JPEG. The evaluation's captures
    (`docemb.capture`) are made by other code with other parameters, so they measure
    generalisation, not this pipeline.

    `heavy` (augment "capture-heavy") draws occluders and glare more often and adds pen-like
    bars and per-channel white-balance gains: the effects hard captures lose most to."""
    more = 1.7 if heavy else 1.0
    return A.Compose(
        [
            *(_pens_and_gains() if heavy else []),
            A.Affine(rotate=(-11, 11), shear=(-3, 3), border_mode=cv2.BORDER_REFLECT_101, p=0.7),
            A.CoarseDropout(
                num_holes_range=(1, 3),
                hole_height_range=(0.08, 0.3),
                hole_width_range=(0.05, 0.2),
                fill="random_uniform",
                p=0.35 * more,
            ),
            A.RandomSunFlare(flare_roi=(0, 0, 1, 1), src_radius=60, num_flare_circles_range=(1, 4), p=0.2 * more),
            A.Illumination(intensity_range=(0.05, 0.2), p=0.4),
            A.OneOf([A.PlanckianJitter(), A.RGBShift(r_shift_limit=25, g_shift_limit=25, b_shift_limit=25)], p=0.5),
            A.RandomBrightnessContrast(brightness_limit=(-0.45, 0.2), contrast_limit=0.3, p=0.7),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.OneOf(
                [
                    A.Defocus(radius=(1, 4), alias_blur=(0.1, 0.3)),
                    A.MotionBlur(blur_limit=(3, 9)),
                    A.GaussianBlur(sigma_limit=(0.3, 1.6)),
                ],
                p=0.6,
            ),
            A.OneOf([A.ISONoise(color_shift=(0.01, 0.05), intensity=(0.1, 0.6)), A.GaussNoise(std_range=(0.01, 0.08))], p=0.6),
            A.ImageCompression(quality_range=(20, 95), p=0.7),
        ],
        seed=seed,
    )


def _pens_and_gains() -> list[A.BasicTransform]:
    """A pen or pencil across the page (a long thin bar, turned with the page by the affine
    that follows), a hard specular highlight and a white balance off by a gain per channel."""
    bar = dict(num_holes_range=(1, 2), fill="random_uniform")
    return [
        A.OneOf(
            [
                A.CoarseDropout(hole_height_range=(0.015, 0.045), hole_width_range=(0.3, 0.8), **bar),
                A.CoarseDropout(hole_height_range=(0.3, 0.8), hole_width_range=(0.015, 0.045), **bar),
            ],
            p=0.3,
        ),
        A.RandomSunFlare(
            flare_roi=(0.1, 0.1, 0.9, 0.9), src_radius=90, num_flare_circles_range=(1, 2), method="physics_based", p=0.3
        ),
        A.MultiplicativeNoise(multiplier=(0.75, 1.25), per_channel=True, p=0.4),
    ]


def loose_capture(image: np.ndarray, background: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The document warped into its own frame as a loose crop would leave it: a smaller,
    slightly tilted quad with `background` (another image of the pool: a desk, other papers)
    showing at the edges. Same size as `image`."""
    h, w = image.shape[:2]
    shrink = rng.uniform(0.0, 0.18, size=4) * np.array([w, h, w, h])  # left, top, right, bottom
    corners = np.array(
        [[shrink[0], shrink[1]], [w - shrink[2], shrink[1]], [w - shrink[2], h - shrink[3]], [shrink[0], h - shrink[3]]]
    )
    corners += rng.normal(0, 0.02, size=(4, 2)) * np.array([w, h])
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(source, corners.astype(np.float32))
    frame = cv2.resize(background, (w, h), interpolation=cv2.INTER_AREA)
    return cv2.warpPerspective(image, warp, (w, h), dst=frame.copy(), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
