"""Retrieval and verification metrics (pair scores, AUROC, TPR at FPR) and their plots."""

import numpy as np
import pytest

from docemb.evaluation import Embeddings, EvalSet, pair_scores, roc_auc, tpr_at_fpr
from docemb.plots import ablation_bars, retrieval_grid, roc_curve, score_histograms


def test_pair_scores_split_own_template_from_the_others():
    templates = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0, 0.6, 0.8], [0, 0.8, 0.6]], dtype=np.float32)
    positives, negatives = pair_scores(Embeddings(templates, queries), np.array([0, 2, 1]))
    assert sorted(positives.tolist()) == pytest.approx([0.8, 0.8, 1.0])
    assert len(negatives) == 6 and sorted(negatives.tolist())[-2:] == pytest.approx([0.6, 0.6])


def test_auroc_counts_ordered_pairs_and_half_ties():
    assert roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert roc_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert roc_auc(np.array([0.5]), np.array([0.5, 0.1])) == pytest.approx(0.75)


def test_tpr_at_fpr_threshold_keeps_the_false_positive_rate():
    rng = np.random.default_rng(0)
    negatives = rng.normal(0.2, 0.1, 100_000)
    positives = rng.normal(0.7, 0.1, 1000)
    rows = {row["fpr"]: row for row in tpr_at_fpr(positives, negatives, (1e-6, 1e-3, 1e-1))}
    for fpr in (1e-3, 1e-1):
        assert np.mean(negatives > rows[fpr]["threshold"]) <= fpr
        assert rows[fpr]["tpr"] == pytest.approx(np.mean(positives > rows[fpr]["threshold"]))
        assert rows[fpr]["measurable"]
    assert rows[1e-3]["threshold"] > rows[1e-1]["threshold"] and rows[1e-3]["tpr"] < rows[1e-1]["tpr"]
    assert not rows[1e-6]["measurable"]  # 1e5 negatives cannot resolve 1e-6


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(0.7, 0.1, 50), rng.normal(0.2, 0.1, 500)
    assert roc_curve({"a": (positives, negatives)}, tmp_path / "roc.png").stat().st_size > 1000
    assert score_histograms(positives, negatives, tmp_path / "hist.png").stat().st_size > 1000
    images = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    eval_set = EvalSet("x/y", ["a", "b", "c", "d"], images, images, np.arange(4))
    embeddings = rng.normal(size=(4, 8)).astype(np.float32)
    assert retrieval_grid(eval_set, embeddings, embeddings, tmp_path / "grid.png", k=3).stat().st_size > 1000
    variants = {"base": {"a/recall@1": 0.5, "a/auroc": 0.9}, "lcnet_050": {"a/recall@1": 0.4}}  # a run without AUROC
    assert ablation_bars(variants, tmp_path / "ablation.png").stat().st_size > 1000
