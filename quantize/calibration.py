"""Calibration and validation inputs from the user's own images.

Half clean templates, half photo-distorted views of them: the model meets both (templates when
registering, photos when matching), so activation ranges must cover both.
"""

from __future__ import annotations

import os

import numpy as np

from docemb.imageio import list_images, load_images
from docemb.photo import distort, photo_distortion
from docemb.preprocess import Preprocessing


def calibration_inputs(
    folders: list[str | os.PathLike], preprocessing: Preprocessing, count: int, offset: int = 0, seed: int = 0
) -> np.ndarray:
    """`count` NCHW float32 inputs from images spread evenly over `folders`.

    Images are taken at stride 2 starting from `offset` (0 or 1), so offset 0 (calibration) and
    offset 1 (validation of the calibration method) never share an image.
    """
    paths = [p for folder in folders for p in list_images(folder)]
    pool = paths[offset::2]
    step = max(1, len(pool) // max(1, count))
    chosen = pool[::step][:count]
    images, _ = load_images(chosen, max_side=512, on_error="skip")
    pipeline = photo_distortion("medium", seed=seed)
    views = [image if i % 2 == 0 else distort(image, pipeline) for i, image in enumerate(images)]
    return np.stack([preprocessing(view) for view in views])
