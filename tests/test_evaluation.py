"""Evaluation measures: drift against float (cosine, neighbour and clear-match agreement), Recall@k, top-k."""

import numpy as np
import pytest

from docemb.evaluation import (
    Embeddings,
    cosine_drift,
    drift_metrics,
    neighbour_agreement,
    retrieval_metrics,
    template_scores,
    top_k_indices,
)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def embeddings():
    rng = np.random.default_rng(0)
    templates = unit(rng.normal(size=(20, 16)))
    queries = unit(np.repeat(templates, 2, axis=0) + 0.1 * rng.normal(size=(40, 16)))
    return Embeddings(templates, queries), np.repeat(np.arange(20), 2)


def test_drift_pairs_row_i_with_row_i(embeddings):
    emb, _ = embeddings
    ref = emb.queries
    noisy = unit(ref + 0.01 * np.random.default_rng(1).normal(size=ref.shape))
    expected = np.array([float(a @ b) for a, b in zip(ref, noisy)])
    drift = cosine_drift(ref, noisy)
    assert drift["cos_mean"] == pytest.approx(expected.mean(), abs=1e-6)
    assert drift["cos_min"] == pytest.approx(expected.min(), abs=1e-6)
    # the same vectors in another order are not the same embeddings: drift must say so
    shuffled = cosine_drift(ref, noisy[::-1])
    assert shuffled["cos_mean"] < 0.5


def test_identical_models_have_no_drift(embeddings):
    emb, _ = embeddings
    metrics = drift_metrics(emb, Embeddings(emb.templates.copy(), emb.queries.copy()))
    assert metrics["cos_mean"] == pytest.approx(1.0) and metrics["cos_min"] == pytest.approx(1.0)
    assert metrics["top1_agreement"] == 1.0


def test_clear_match_agreement_ignores_flipped_near_ties():
    """Queries 0-1 sit exactly between two templates (a near-tie), the others clearly at one:
    a candidate that flips only the near-ties loses top-1 agreement but keeps it on clear matches."""
    templates = np.eye(4, 8)
    tie = unit(np.array([[1.0, 1.0005, 0, 0, 0, 0, 0, 0], [1.0005, 1.0, 0, 0, 0, 0, 0, 0]]))
    clear = unit(templates[2:] + 0.2 * np.eye(2, 8, k=4))
    reference = Embeddings(templates, np.concatenate([tie, clear]))
    candidate = Embeddings(templates, np.concatenate([tie[::-1], clear]))
    metrics = drift_metrics(reference, candidate)
    assert metrics["top1_agreement"] == 0.5
    assert metrics["clear_share"] == 0.5 and metrics["top1_agreement_clear"] == 1.0
    # the float gaps: two near-ties (about 0.0002) and two clear matches (about 0.98)
    scores = np.sort(reference.queries @ templates.T, axis=1)
    assert metrics["margin_median"] == pytest.approx(np.median(scores[:, -1] - scores[:, -2]))
    assert metrics["score_error_median"] == 0.0  # the flip moves 4 of 16 scores, by the tiny gap
    scaled = drift_metrics(reference, Embeddings(templates * 1.01, reference.queries))  # every score 1 % higher
    assert scaled["score_error_median"] == pytest.approx(0.01 * np.median(np.abs(reference.queries @ templates.T)))


def test_drift_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        cosine_drift(np.ones((3, 4)), np.ones((4, 4)))


def test_recall_counts_the_right_template(embeddings):
    emb, labels = embeddings
    assert retrieval_metrics(emb, labels)["recall@1"] == 1.0
    wrong = np.roll(labels, 2)  # every query now claims another template
    assert retrieval_metrics(emb, wrong)["recall@1"] == 0.0


def test_neighbour_agreement_sees_a_swapped_gallery(embeddings):
    emb, _ = embeddings
    swapped = Embeddings(emb.templates[::-1].copy(), emb.queries)
    scores = [template_scores(e.queries, e.templates) for e in (emb, swapped)]
    assert neighbour_agreement(*scores) == 0.0


def test_top_k_is_sorted_best_first():
    queries = np.array([[1.0, 0.0]])
    gallery = unit(np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 0.5], [1.0, 0.0]]))
    assert top_k_indices(queries, gallery, 3).tolist() == [[3, 1, 2]]
