"""The evaluation's capture simulation: seeded, growing with strength, apart from training's; the
centre crop that undoes a loose capture's margins and the loose frame that gives templates them."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
from PIL import Image

from docemb import capture, photo
from docemb.capture import CAPTURE_STRENGTHS, simulate_capture
from docemb.evaluation import build_eval_set, template_scores
from docemb.preprocess import Preprocessing, TemplateView, centre_crop, fit_within, loose_frame, rotated


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


def test_a_centre_crop_brings_a_loose_capture_back_to_its_template_scale():
    template = page(200, 150)
    frame = np.full((200, 150, 3), 90, np.uint8)  # desk around the document, 4 % of each side
    frame[8:192, 6:144] = np.asarray(Image.fromarray(template).resize((138, 184), Image.Resampling.BILINEAR))
    prep = Preprocessing(size=64)
    whole = np.abs(prep.resize(frame).astype(float) - prep.resize(template)).mean()
    cropped = np.abs(prep.resize(centre_crop(frame, 0.92)).astype(float) - prep.resize(template)).mean()
    assert centre_crop(frame, 0.92).shape == (184, 138, 3)
    assert cropped < whole / 3


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.2])
def test_a_centre_crop_keeps_a_share_of_each_side(keep):
    with pytest.raises(ValueError, match="share of each side"):
        centre_crop(page(), keep)


def test_eval_queries_are_the_seeded_captures_centre_cropped(tmp_path):
    Image.fromarray(page()).save(tmp_path / "doc.png")
    prep = Preprocessing(size=64)
    eval_set = build_eval_set(tmp_path, prep, 2, "hard", seed=4, query_crop=0.9)
    rng = np.random.default_rng(4)
    expected = [prep.resize(centre_crop(simulate_capture(page(), "hard", rng), 0.9)) for _ in range(2)]
    assert np.array_equal(eval_set.queries, np.stack(expected))
    assert np.array_equal(
        build_eval_set(tmp_path, prep, 2, "hard", seed=4).queries[0],
        prep.resize(simulate_capture(page(), "hard", np.random.default_rng(4))),
    )


def test_a_loose_frame_draws_the_template_at_a_loose_capture_scale():
    template = page(200, 150)
    framed = loose_frame(template, 0.05)
    assert framed.shape == (220, 166, 3) and np.array_equal(framed[10:210, 8:158], template)
    assert (framed[:10] == 128).all() and (framed[:, :8] == 128).all()
    assert np.array_equal(loose_frame(template, 0.0), template)
    with pytest.raises(ValueError, match="share of each side"):
        loose_frame(template, 0.5)


def test_eval_templates_are_framed_and_queries_unchanged(tmp_path):
    Image.fromarray(page()).save(tmp_path / "doc.png")
    prep = Preprocessing(size=64)
    plain = build_eval_set(tmp_path, prep, 1, "mild", seed=2)
    framed = build_eval_set(tmp_path, prep, 1, "mild", seed=2, template_pad=0.1)
    assert np.array_equal(framed.templates[0, 0], prep.resize(loose_frame(page(), 0.1)))
    assert np.array_equal(framed.queries, plain.queries) and not np.array_equal(framed.templates, plain.templates)


def test_the_contract_carries_the_template_frame_and_older_contracts_read_unframed(tmp_path):
    prep = Preprocessing(size=64, template_frame=0.1)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    older = {key: value for key, value in prep.to_dict().items() if key not in ("template_frame", "template_views")}
    assert Preprocessing.from_dict(older).template_frame == 0.0 and Preprocessing.from_dict(older).views == (TemplateView(),)
    assert np.array_equal(prep.template(page()), prep.resize(loose_frame(page(), 0.1)))
    Image.fromarray(page()).save(tmp_path / "doc.png")
    assert np.array_equal(build_eval_set(tmp_path, prep, 1, "mild").templates[0, 0], prep.template(page()))  # as registered
    with pytest.raises(ValueError, match="share of each side"):
        Preprocessing(template_frame=0.5)


def test_a_turned_template_keeps_its_pixels_and_shows_grey_corners():
    template = page(200, 150)
    assert np.array_equal(rotated(template, 0), template)
    assert np.array_equal(rotated(template, 90), np.rot90(template))  # anticlockwise, as np.rot90
    turned = rotated(template, 6)
    assert turned.shape[0] > 200 and turned.shape[1] > 150  # the canvas holds the whole turned page
    assert (turned[0, 0] == 128).all() and (turned[-1, -1] == 128).all()
    centre = turned[turned.shape[0] // 2 - 2 : turned.shape[0] // 2 + 2, turned.shape[1] // 2 - 2 : turned.shape[1] // 2 + 2]
    assert np.abs(centre.astype(int) - 245).max() <= 1  # the page's blank middle, not grey


def test_the_contract_carries_template_views_and_each_template_is_embedded_as_every_view(tmp_path):
    views = (TemplateView(0.05), TemplateView(0.0, -6), TemplateView(0.1, 6))
    prep = Preprocessing(size=64, template_frame=0.05, template_views=views)
    assert Preprocessing.from_dict(prep.to_dict()) == prep and prep.views == views
    one = Preprocessing(size=64, template_frame=0.05)
    assert one.to_dict()["template_views"] == [{"frame": 0.05, "degrees": 0.0}] and Preprocessing.from_dict(one.to_dict()) == one
    inputs = prep.template_inputs(page())
    assert inputs.shape == (3, 64, 64, 3)
    small = fit_within(page(), 128)  # turned views start from a copy at most twice the model's size
    assert small.shape == (128, 96, 3) and np.array_equal(inputs[0], prep.template(page()))
    assert np.array_equal(inputs[1], prep.resize(rotated(small, -6)))
    assert np.array_equal(inputs[2], prep.resize(rotated(loose_frame(small, 0.1), 6)))
    assert fit_within(page(), 400) is page() or np.array_equal(fit_within(page(), 400), page())  # fits already
    Image.fromarray(page()).save(tmp_path / "doc.png")
    eval_set = build_eval_set(tmp_path, prep, 1, "mild")
    assert np.array_equal(eval_set.templates[0], inputs)  # as registered
    assert build_eval_set(tmp_path, prep, 1, "mild", template_pad=0.1).templates.shape[1] == 1  # one frame overrides
    with pytest.raises(ValueError, match="45 degrees"):
        TemplateView(0.0, 50)


def test_a_query_scores_a_template_by_its_best_view():
    templates = np.array([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [0.0, 1.0]]])  # (T=2, views=2, D=2)
    queries = np.array([[0.6, 0.8], [1.0, 0.0]])
    assert np.allclose(template_scores(queries, templates), [[1.0, 0.8], [1.0, 0.0]])
    assert np.allclose(template_scores(queries, templates[:, 0]), queries @ templates[:, 0].T)  # one view: plain cosine
