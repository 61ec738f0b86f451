"""Geometric verification: captures verify against their own page, not its near-duplicate; flat cards fall back to cosine."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from docemb.errors import DocembError
from docemb.templates import TemplateStore
from docemb.verify import (
    Candidate,
    VerifyRule,
    VerifySettings,
    decide,
    features,
    features_path,
    homography_inliers,
    inliers,
    load_features,
    plausible,
    rerank,
    save_features,
    template_features,
)


def text_page(seed: int, size: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A page of random words in a fixed layout: pages of one seed share layout, not text."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)
    rng = np.random.default_rng(seed)
    draw.text((40, 30), "Chapter 1. Introduction", font=ImageFont.load_default(size=24), fill="black")  # the shared header
    for y in range(80, size[1] - 40, 22):
        words = " ".join("".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), int(rng.integers(2, 9)))) for _ in range(7))
        draw.text((40, y), words, font=font, fill="black")
    return np.asarray(image)


def capture(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A homography (about 6 degrees and some perspective), blur and noise."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = (corners + rng.uniform(-0.06, 0.06, (4, 2)) * [w, h]).astype(np.float32)
    warped = cv2.warpPerspective(image, cv2.getPerspectiveTransform(corners, moved), (w, h), borderValue=(90, 80, 70))
    blurred = cv2.GaussianBlur(warped, (0, 0), 0.8)
    return np.clip(blurred + rng.normal(0, 6, blurred.shape), 0, 255).astype(np.uint8)


def test_a_capture_verifies_against_its_template_with_many_inliers():
    page = text_page(1)
    assert inliers(features(capture(page)), features(page)) >= 50


def test_a_blurred_dim_capture_is_verified_from_corners_found_at_a_lower_threshold():
    page = text_page(1)
    shot = (cv2.GaussianBlur(capture(page), (0, 0), 2.5) * 0.4).astype(np.uint8)  # defocus and low light
    once = VerifySettings(retry_thresholds=())
    assert features(shot, once).count < once.enough_keypoints and inliers(features(shot, once), features(page, once), once) < 15
    assert features(shot).count >= VerifySettings().enough_keypoints
    assert inliers(features(shot), features(page)) >= 30


def test_a_blurred_capture_is_matched_against_the_templates_blurred_copy():
    page = text_page(1)
    template = template_features(page)
    assert template.soft is not None and template.soft.size == template.size
    shot = features((cv2.GaussianBlur(capture(page), (0, 0), 3.5) * 0.4).astype(np.uint8))
    sharp_only = replace(template, soft=None)
    assert shot.retried and inliers(shot, template) > 1.5 * inliers(shot, sharp_only)
    clear = features(capture(page))
    assert not clear.retried and inliers(clear, template) == inliers(clear, sharp_only)  # a sharp query: the sharp set


@pytest.mark.parametrize(
    ("homography", "expected"),
    [
        (np.eye(3), True),
        (np.array([[0.8 * np.cos(0.1), -0.8 * np.sin(0.1), 40], [0.8 * np.sin(0.1), 0.8 * np.cos(0.1), 10], [0, 0, 1]]), True),
        (np.diag([1.0, 0.01, 1.0]), False),  # the page folded onto a line: its outline would fill 100 captures
        (np.diag([10.0, 10.0, 1.0]), False),  # the page a speck of the capture
        (np.array([[-1.0, 0, 480], [0, 1, 0], [0, 0, 1]]), False),  # mirrored
        (np.array([[1.0, 0, 0], [0, 1, 0], [0.003, 0, 1]]), False),  # part of the page behind the camera
        (np.array([[1.0, 2, 0], [2, 4, 0], [0, 0, 1]]), False),  # singular
    ],
)
def test_only_a_homography_a_photo_could_make_is_plausible(homography, expected):
    assert plausible(homography, (480, 640)) is expected


def test_matches_along_one_line_fit_a_homography_but_do_not_verify():
    rng = np.random.default_rng(0)  # a card's bar matched to another card's row of dashes
    x = rng.uniform(0, 600, 80)
    source = np.stack([x, 200 + rng.normal(0, 0.5, 80)], axis=1).astype(np.float32)
    target = np.stack([0.5 * x + 10, 300 + rng.normal(0, 0.5, 80)], axis=1).astype(np.float32)
    assert homography_inliers(source, target, (480, 640), VerifySettings(check_geometry=False)) == 80
    assert homography_inliers(source, target, (480, 640)) == 0


def test_page_one_is_told_from_page_two_of_the_same_layout():
    first, second = text_page(1), text_page(2)
    query = features(capture(first, seed=3))
    own, other = inliers(query, features(first)), inliers(query, features(second))
    assert own >= 50 and other < 15
    # cosine put the wrong page first; verification puts the right one back on top
    ranked = rerank(query, np.array([0.90, 0.95]), [features(first), features(second)], k=2)
    assert ranked[0].index == 0 and ranked[0].cosine_rank == 1


def test_flat_cards_fall_back_to_the_cosine_order():
    cards = []
    for colour in ((200, 30, 30), (30, 30, 200)):
        card = np.zeros((270, 428, 3), np.uint8)
        card[:] = colour
        cards.append(card)
    query = features(capture(cards[0]))
    assert inliers(query, features(cards[0])) == -1  # too few keypoints to verify
    ranked = rerank(query, np.array([0.8, 0.7]), [features(c) for c in cards], k=2)
    assert [c.index for c in ranked] == [0, 1] and all(c.inliers == -1 for c in ranked)


def test_a_store_keeps_features_and_verification_overrules_a_wrong_cosine(tmp_path):
    first, second = text_page(1), text_page(2)
    store = TemplateStore(2, VerifySettings())
    store.put("page1", np.array([1.0, 0.0]), first)
    store.put("page2", np.array([0.8, 0.6]), second)
    store.write(tmp_path / "pages.store")
    size = features_path(tmp_path / "pages.store").stat().st_size
    assert 0 < size < 200_000
    again = TemplateStore.read(tmp_path / "pages.store")
    assert again.verify_settings == VerifySettings() and set(again.features) == {"page1", "page2"}
    kept, made = again.features["page1"], store.features["page1"]
    assert np.array_equal(kept.soft.descriptors, made.soft.descriptors) and kept.soft.size == made.soft.size
    query = np.array([0.7, 0.714])  # the embedding prefers page 2; the capture is of page 1
    plain = again.match(query, threshold=0.5)
    assert plain.best == "page2" and plain.inliers is None
    verified = again.match(query, threshold=0.5, image=capture(first, seed=3), verify=True)
    assert verified.best == "page1" and verified.verified and verified.matched and verified.cosine_rank == 1
    assert verified.inliers >= 50


def test_inliers_of_a_shared_header_do_not_pass_a_cosine_below_the_verified_floor():
    shared_header = [Candidate(0, 0, 0.4, 40), Candidate(1, 1, 0.3, 5)]
    assert not decide(shared_header, threshold=0.9, rule=VerifyRule(min_inliers=15, verified_cosine=0.6)).matched
    assert decide(shared_header, threshold=0.9, rule=VerifyRule(min_inliers=15, verified_cosine=0.3)).matched
    flat = [Candidate(1, 0, 0.95, -1), Candidate(0, 1, 0.5, -1)]
    verdict = decide(flat, threshold=0.9, rule=VerifyRule())
    assert verdict.matched and not verdict.verified and verdict.best.index == 1  # cosine decides


def test_a_few_inliers_choose_the_template_and_the_cosine_threshold_decides():
    # rerank put template 3 first: 20 inliers, under the rule's 26, against none for the cosine top-1
    weak = [Candidate(3, 2, 0.93, 20), Candidate(1, 0, 0.97, 0), Candidate(2, 1, 0.95, 0)]
    verdict = decide(weak, threshold=0.9, rule=VerifyRule(min_inliers=26))
    assert verdict.best.index == 3 and verdict.matched and not verdict.verified
    assert not decide(weak, threshold=0.94, rule=VerifyRule(min_inliers=26)).matched  # its own cosine, not the top-1's


def test_a_features_file_of_another_version_is_refused_by_name(tmp_path):
    path = tmp_path / "s.store.features.npz"
    save_features(path, VerifySettings(), {"a": features(text_page(1))})
    assert load_features(path)[1]["a"].count > 30
    with np.load(path) as data:
        arrays = dict(data)
    arrays["meta"] = np.frombuffer(b'{"version": 99, "settings": {}, "names": []}', dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(DocembError, match="s.store.features.npz: features version 99"):
        load_features(path)


def test_register_takes_the_features_and_rule_from_the_models_contract(small_model, synth_eval, tmp_path):
    from docemb.cli import main
    from docemb.contract import describe_model, write_contract
    from docemb.export.onnx_export import export_onnx
    from docemb.templates import read_info
    from docemb.verify import contract_entry

    path = export_onnx(small_model, tmp_path / "m.onnx")
    entry = contract_entry(VerifySettings(features=500), VerifyRule(min_inliers=40))
    write_contract(path, small_model.preprocessing, describe_model(path), {"checkpoint": None}, verification=entry)
    templates = sorted(str(p) for p in synth_eval.glob("*.png"))[:2]
    store = tmp_path / "templates.bin"
    main(["match", "register", *templates, "--model", str(path), "--store", str(store), "--threshold", "0.9", "--verify"])
    assert read_info(store).verify_rule == {"min_inliers": 40, "verified_cosine": 0.0}
    assert TemplateStore.read(store).verify_settings == VerifySettings(features=500)


def test_the_calibrated_rule_lets_at_most_its_share_of_unregistered_captures_verify():
    from docemb.benchmark.verification import calibrate

    shortlists = [[Candidate(0, 0, 0.9, inliers), Candidate(1, 1, 0.8, 0)] for inliers in range(200)]
    rule = calibrate(shortlists, fpr=0.02)
    verified = sum(max(c.inliers for c in s) >= rule.min_inliers for s in shortlists)
    assert verified == 4 and rule.min_inliers == 196
    assert calibrate([[Candidate(0, 0, 0.9, 3)]] * 50).min_inliers == VerifyRule().min_inliers  # never below the default


def test_a_detector_the_installed_opencv_lacks_is_refused_by_name():
    with pytest.raises(DocembError, match="unknown detector 'akaze'; choose one of orb, sift"):
        features(np.zeros((64, 64, 3), np.uint8), VerifySettings(detector="akaze"))


def test_the_benchmark_counts_the_work_a_phone_estimate_scales(small_model, tmp_path):
    from docemb.benchmark.verification import benchmark
    from docemb.model import save_model

    folder = tmp_path / "eval" / "templates"
    folder.mkdir(parents=True)
    for seed in range(4):
        Image.fromarray(text_page(seed)).save(folder / f"page{seed}.png")
    (tmp_path / "eval" / "unknown").mkdir()
    for seed in (10, 11):
        Image.fromarray(text_page(seed)).save(tmp_path / "eval" / "unknown" / f"other{seed}.png")
    save_model(tmp_path / "m.safetensors", small_model)
    result = benchmark(tmp_path / "m.safetensors", tmp_path / "eval", ["mild"], 3, [2], "mild", VerifySettings(features=300))
    cost = result["cost"]
    assert 100 <= cost["query_keypoints"] <= 300 and 100 <= cost["template_keypoints"] <= 300
    assert cost["template_keypoints"] ** 2 / 4 < cost["distances_per_template"] <= 300 * 300  # query x template, brute force
    assert cost["descriptor_bytes"] == 32 and min(cost["features_ms"], cost["match_ms"]) > 0
    assert 0 < cost["ransac_share"] <= 1 and cost["ransac_ms"] > 0  # a page's own capture always gets a fit
    assert {row["group"] for row in result["rows"]} == {"all", "page"} and set(result["ms_per_query"]["mild"]) == {"2", "4"}
    from docemb.plots import verification_summary

    width, height = Image.open(verification_summary(result["rows"], result["ms_per_query"], tmp_path / "v.png")).size
    assert width > height > 300  # two panels side by side
    from docemb.benchmark.verification import impostor_sheet

    closest = result["closest_unknown"]
    assert json.loads(json.dumps(result)) == result  # what --out writes
    assert sorted(i["unknown"] for i in closest) == ["other10.png", "other11.png"]
    assert {i["template"] for i in closest} <= {f"page{seed}.png" for seed in range(4)}
    width, height = Image.open(impostor_sheet(tmp_path / "eval", closest, tmp_path / "sheet.png")).size
    assert height > 300 and width > height  # two rows of three images


def test_a_pair_with_too_few_matches_to_verify_skips_ransac(monkeypatch):
    import docemb.verify as verify_module

    page, photo = features(text_page(0)), features(capture(text_page(0)))
    fitted = []
    monkeypatch.setattr(verify_module, "homography_inliers", lambda *args: fitted.append(args) or 99)
    assert inliers(photo, page) == 99 and len(fitted) == 1  # enough ratio-test matches: fitted
    assert inliers(photo, page, VerifySettings(min_inliers=10_000)) == 0 and len(fitted) == 1  # too few: not fitted


def test_the_benchmark_crops_what_the_embedding_sees_and_verifies_the_whole_capture(small_model, tmp_path):
    from docemb.benchmark.verification import _captures
    from docemb.capture import simulate_capture
    from docemb.embedders import load_embedder
    from docemb.evaluation import embed_resized
    from docemb.model import save_model
    from docemb.preprocess import centre_crop

    save_model(tmp_path / "m.safetensors", small_model)
    embed, prep = load_embedder(tmp_path / "m.safetensors")
    pages, settings = [text_page(0), text_page(1)], VerifySettings(features=300)
    whole = _captures(pages, "medium", 0, embed, prep, settings)
    cropped = _captures(pages, "medium", 0, embed, prep, settings, query_crop=0.9)
    rng = np.random.default_rng(0)
    shots = [simulate_capture(p, "medium", rng) for p in pages]
    expected = embed_resized(embed, prep, np.stack([prep.resize(centre_crop(s, 0.9)) for s in shots]))
    assert np.allclose(cropped.embeddings, expected, atol=1e-6) and not np.allclose(cropped.embeddings, whole.embeddings)
    assert all(np.array_equal(a.descriptors, b.descriptors) for a, b in zip(whole.features, cropped.features))


def test_the_closest_unknown_captures_are_the_ones_that_spend_the_open_set_budget():
    from docemb.benchmark.verification import closest_impostors, operating_point

    rule = VerifyRule()
    shortlists = [[Candidate(1, 0, 0.5, rule.min_inliers + 14), Candidate(0, 1, 0.4, 0)]]  # verified: passes on inliers
    shortlists += [[Candidate(i % 3, 0, float(c), 3)] for i, c in enumerate(np.linspace(0.3, 0.9, 199))]
    point = operating_point([[Candidate(0, 0, 0.95, 0)]], shortlists, np.array([0]), rule)
    assert point.rule == rule
    closest = closest_impostors("hard", shortlists, point, [f"u{i}" for i in range(200)], ["a", "b", "c"], 4)
    # 200 captures allow 2 through: the verified one and the highest cosine, not the next
    passing = [(i.unknown, i.verified, i.passes) for i in closest]
    assert passing == [("u0", True, True), ("u199", False, True), ("u198", False, False), ("u197", False, False)]
    assert closest[0].template == "b" and closest[0].inliers == 40 and closest[1].cosine == pytest.approx(0.9)
    assert closest[1].template == ["a", "b", "c"][198 % 3]


def test_tpr_stays_at_fpr_1e_2_where_the_rule_verifies_more_unknown_captures_than_that():
    from docemb.benchmark.verification import operating_point

    rule = VerifyRule()  # 26 inliers
    # 100 unknown captures (1 may pass): three look-alikes verify with 30, 40 and 50 inliers
    unknown = [[Candidate(0, 0, 0.6, n)] for n in (30, 40, 50)] + [[Candidate(1, 0, 0.5, 0)]] * 97
    known = [[Candidate(0, 0, 0.55, 45)], [Candidate(1, 0, 0.55, 60)], [Candidate(1, 0, 0.7, 0)]]
    point = operating_point(known, unknown, np.array([0, 1, 1]), rule)
    passed = sum(decide(s, np.nextafter(point.threshold, 2), point.rule).matched for s in unknown)
    # 41 inliers lets only the 50-inlier look-alike verify, which spends the budget: the cosine
    # threshold sits on the best unverified unknown capture (0.6), and every known capture passes
    # (51 would verify none, but then the 45-inlier capture needs cosine and fails)
    assert passed == 1 and point.rule.min_inliers == 41 and point.threshold == pytest.approx(0.6)


def test_image_rows_lays_out_every_image_with_its_caption(tmp_path):
    from docemb.plots import image_rows

    rows = [[(text_page(0), "page"), (capture(text_page(0)), "capture")], [(text_page(1), "other")]]
    width, height = Image.open(image_rows(rows, tmp_path / "rows.png", "title")).size
    assert height > 300 and width > 200
