"""Phone-photo simulation: what a document looks like after capture and imperfect alignment.

One pipeline serves two purposes: training augmentation (random each time) and evaluation
queries (seeded, so every model is scored on the same distorted images). Geometry stays small
(a few degrees, a few percent of crop) so a sample never turns into another of its 24 classes.
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
