"""The evaluation's capture simulation: seeded, growing with strength, apart from training's."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest

from docemb import capture, photo
from docemb.capture import CAPTURE_STRENGTHS, simulate_capture


def page(h: int = 200, w: int = 150) -> np.ndarray:
    rng = np.random.default_rng(3)
    image = np.full((h, w, 3), 245, np.uint8)
    for y in range(20, h - 20, 12):  # text lines
        image[y : y + 4, 15 : int(rng.integers(60, w - 15))] = 30
    return image


def test_same_seed_same_pixels_and_shape():
    a = simulate_capture(page(), "strong", np.random.default_rng(5))
    b = simulate_capture(page(), "strong", np.random.default_rng(5))
    assert a.shape == page().shape and a.dtype == np.uint8
    assert np.array_equal(a, b)


def test_captures_drift_further_from_the_template_as_strength_grows():
    template = page().astype(np.float32)
    distance = {}
    for strength in CAPTURE_STRENGTHS:
        rng = np.random.default_rng(0)
        distance[strength] = np.mean([np.abs(simulate_capture(page(), strength, rng) - template).mean() for _ in range(12)])
    values = [distance[s] for s in CAPTURE_STRENGTHS]
    assert values == sorted(values), distance


def test_hard_captures_show_background_at_the_edges():
    template = page()
    rng = np.random.default_rng(1)
    border_change = []
    for _ in range(10):
        shot = simulate_capture(template, "hard", rng).astype(np.float32)
        border_change.append(np.abs(shot[:, :3] - template[:, :3]).mean() + np.abs(shot[:, -3:] - template[:, -3:]).mean())
    assert np.median(border_change) > 20  # white page edges replaced by the desk


def test_unknown_strength_is_refused():
    with pytest.raises(ValueError, match="hard"):
        simulate_capture(page(), "extreme", np.random.default_rng(0))


def imported_modules(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_evaluation_code_shares_nothing_with_the_training_augmentation():
    assert not imported_modules(capture) & {"albumentations", "docemb.photo"}
    assert "docemb.capture" not in imported_modules(photo)
