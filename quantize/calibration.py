"""Calibration and validation inputs from the user's own images.

Half clean templates, half photo-distorted views of them: the model meets both (templates when
registering, photos when matching), so activation ranges must cover both.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from docemb.imageio import list_images, load_images
from docemb.photo import distort, photo_distortion
from docemb.preprocess import Preprocessing


def calibration_pool(folders: list[str | os.PathLike], offset: int = 0) -> list[Path]:
    """The images of `folders` at stride 2 starting from `offset` (0 or 1): offset 0 calibrates
    (and fine-tunes), offset 1 validates, and the two never share an image."""
    return [p for folder in folders for p in list_images(folder)][offset::2]


def calibration_inputs(
    folders: list[str | os.PathLike], preprocessing: Preprocessing, count: int, offset: int = 0, seed: int = 0
) -> np.ndarray:
    """`count` NCHW float32 inputs from images spread evenly over the pool at `offset`
    (calibration_pool), every other one photo-distorted."""
    images = _load_spread(calibration_pool(folders, offset), count)
    pipeline = photo_distortion("medium", seed=seed)
    views = [image if i % 2 == 0 else distort(image, pipeline) for i, image in enumerate(images)]
    return np.stack([preprocessing(view) for view in views])


def finetune_images(folders: list[str | os.PathLike], count: int) -> list[np.ndarray]:
    """Up to `count` RGB images of the calibration pool for quantization-aware fine-tuning
    (docemb.quantize.qat distorts them afresh every step); never a validation image."""
    return _load_spread(calibration_pool(folders, offset=0), count)


def _load_spread(pool: list[Path], count: int) -> list[np.ndarray]:
    """Up to `count` images spread evenly over `pool`, decoded at phone-crop size; unreadable
    files are skipped with a warning."""
    step = max(1, len(pool) // max(1, count))
    images, _ = load_images(pool[::step][:count], max_side=512, on_error="skip")
    return images
