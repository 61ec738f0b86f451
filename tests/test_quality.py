"""`docemb evaluate`: open-set TPR, groups of templates, every strength for every model."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from docemb.benchmark.quality import evaluate_models, format_table, model_labels, open_set, summary, template_kinds
from docemb.capture import CAPTURE_STRENGTHS
from docemb.model import save_model


def test_open_set_threshold_lets_one_percent_of_impostors_through():
    impostors = np.linspace(0.0, 0.99, 100)  # best scores of 100 unknown captures
    threshold_tpr, threshold = open_set(np.array([0.995, 0.985, 0.999]), np.array([True, True, False]), impostors)
    assert threshold == pytest.approx(0.98)  # one impostor (0.99) above it
    assert threshold_tpr == pytest.approx(2 / 3)  # 0.995 and 0.985 right and above it; 0.999 above but wrong


def test_kinds_come_from_a_manifest_above_the_folder_or_from_names(tmp_path):
    folder = tmp_path / "eval"
    (folder / "templates").mkdir(parents=True)
    names = ["page0000.png", "page0001.png", "card0000.png"]
    assert template_kinds(folder, names) == ["page", "page", "card"]
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows(
            [
                ["split", "name", "kind"],
                ["eval/templates", "page0000", "page"],
                ["eval/templates", "page0001", "page-near-dup"],
                ["eval/templates", "card0000", "card"],
            ]
        )
    assert template_kinds(folder, names) == ["page", "page-near-dup", "card"]


def test_every_model_strength_and_group_gets_a_row(tmp_path, small_model, synth_eval):
    folder = tmp_path / "eval"
    shutil.copytree(synth_eval, folder / "templates")
    (folder / "unknown").mkdir()
    for path in sorted((folder / "templates").glob("*.png"))[:2]:  # two templates become unknown documents
        shutil.move(path, folder / "unknown" / path.name)
    checkpoint = tmp_path / "small.safetensors"
    save_model(checkpoint, small_model)
    rows = evaluate_models([checkpoint], [folder], queries_per_template=1)
    kinds = set(template_kinds(folder / "templates", [p.name for p in (folder / "templates").glob("*.png")]))
    assert {(r.strength, r.group) for r in rows} == {(s, g) for s in CAPTURE_STRENGTHS for g in ["all", *kinds]}
    for row in rows:
        assert 0 <= row.recall_at_1 <= row.recall_at_5 <= 1
        assert row.tpr_at_fpr is not None and 0 <= row.tpr_at_fpr <= row.recall_at_1
    assert "hard" in format_table(rows)
    means = summary(rows)[f"small.safetensors {rows[0].eval_set}"]
    assert means["mean over strengths"] == pytest.approx(np.mean([means[s] for s in CAPTURE_STRENGTHS]))


def test_each_model_sees_templates_registered_as_its_contract_says_and_the_same_captures(tmp_path, small_model, synth_eval):
    from dataclasses import replace

    from docemb.preprocess import TemplateView

    plain, framed, viewed = tmp_path / "plain.safetensors", tmp_path / "framed.safetensors", tmp_path / "viewed.safetensors"
    save_model(plain, small_model)
    small_model.config = replace(small_model.config, template_frame=0.1)
    save_model(framed, small_model)  # the same weights
    small_model.config = replace(small_model.config, template_views=(TemplateView(0.1), TemplateView(0.1, 6)))
    save_model(viewed, small_model)
    rows = evaluate_models([plain, framed, viewed], [synth_eval], strengths=("hard",), queries_per_template=1)
    frames = {row.model: (row.template_frame, row.template_views) for row in rows}
    assert frames == {"plain.safetensors": (0.0, 1), "framed.safetensors": (0.1, 1), "viewed.safetensors": (0.1, 2)}
    alone = evaluate_models([plain], [synth_eval], strengths=("hard",), queries_per_template=1)
    assert [r.recall_at_1 for r in alone] == [r.recall_at_1 for r in rows if r.model == "plain.safetensors"]
    by_flag = evaluate_models(
        [plain, framed, viewed], [synth_eval], strengths=("hard",), queries_per_template=1, template_pad=0.1
    )
    assert {(row.template_frame, row.template_views) for row in by_flag} == {(0.1, 1)}  # one frame for all
    assert [r.recall_at_1 for r in by_flag if r.model == "plain.safetensors"] == [
        r.recall_at_1 for r in rows if r.model == "framed.safetensors"
    ]


def test_multiview_benchmark_compares_ways_of_registering_templates(tmp_path, small_model, synth_eval):
    from docemb.benchmark.multiview import benchmark, geometric_grid
    from docemb.preprocess import TemplateView

    grid = geometric_grid([0.0, 0.1], [6, 0])
    assert grid[:2] == (TemplateView(0.0, 0), TemplateView(0.1, 0)) and len(grid) == 4  # unturned first
    save_model(tmp_path / "m.safetensors", small_model)
    rows = benchmark(tmp_path / "m.safetensors", synth_eval, [2], ["mild", "hard"], grid)
    names = ("as registered (1 views)", "max over 4 geometric", "mean of 2 random", "max over 2 random")
    assert [(r.strength, r.templates) for r in rows] == [(strength, name) for strength in ("mild", "hard") for name in names]
    assert all(0 <= r.recall_at_1 <= 1 and r.tpr_at_fpr is None for r in rows)  # synth_eval has no unknown/


@pytest.mark.parametrize(
    "flag, value", [("--query-crop", 0.0), ("--query-crop", 1.5), ("--template-pad", -0.1), ("--template-pad", 0.5)]
)
def test_evaluate_refuses_a_crop_or_frame_outside_its_range(tmp_path, flag, value):
    import argparse

    from docemb.benchmark.quality import add_arguments, run
    from docemb.errors import DocembError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["m.safetensors", "--data", str(tmp_path), flag, str(value)])
    with pytest.raises(DocembError, match=flag):
        run(args)


def test_two_runs_models_of_one_name_are_told_apart(tmp_path):
    a, b, c = tmp_path / "run1" / "model.safetensors", tmp_path / "run2" / "model.safetensors", tmp_path / "v4.safetensors"
    assert model_labels([a, b, c]) == {a: str(a), b: str(b), c: "v4.safetensors"}
