"""The 24-class expansion: every template yields 24 classes, 8 rotations/flips x 3 regions.

A document photographed upside down, mirrored, or half-covered is a different picture from the
template; giving each variant its own class teaches the model to keep them apart instead of
collapsing them, and multiplies the classes a small collection provides by 24.

Variant k (0..23): region = k // 8 (whole, top half, bottom half of the upright template), then
dihedral = k % 8: flip left-right when dihedral >= 4, then rotate by 90 degrees * (dihedral % 4).
Label of variant k of image i = i * 24 + k.
"""

from __future__ import annotations

import numpy as np

REGIONS = ("whole", "top", "bottom")
DIHEDRAL = 8
VARIANTS = len(REGIONS) * DIHEDRAL  # 24


def variant_label(image_index: int, k: int, num_variants: int = VARIANTS) -> int:
    if not 0 <= k < num_variants:
        raise ValueError(f"variant {k} out of range 0..{num_variants - 1}")
    return image_index * num_variants + k


def split_label(label: int, num_variants: int = VARIANTS) -> tuple[int, int]:
    """Inverse of variant_label: (image_index, k)."""
    return divmod(label, num_variants)


def variant_image(image: np.ndarray, k: int) -> np.ndarray:
    """Variant k of an HxWxC image (see the module docstring)."""
    if not 0 <= k < VARIANTS:
        raise ValueError(f"variant {k} out of range 0..{VARIANTS - 1}")
    region, dihedral = divmod(k, DIHEDRAL)
    h = image.shape[0]
    if region == 1:
        image = image[: h // 2]
    elif region == 2:
        image = image[h - h // 2 :]
    if dihedral >= 4:
        image = image[:, ::-1]
    return np.ascontiguousarray(np.rot90(image, dihedral % 4))
