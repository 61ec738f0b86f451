"""Evaluation shared by training and benchmarks: distorted queries against clean templates.

A user registers clean templates and matches phone photos against them, so that is the test:
each template yields seeded photo-like queries, every model embeds the very same pixels, and we
report Recall@k of queries against templates plus drift between two models' embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.capture import simulate_capture
from docemb.embedders import Embedder
from docemb.errors import DocembError
from docemb.imageio import OnError, list_images, load_images
from docemb.preprocess import Preprocessing, centre_crop

EVAL_MAX_SIDE = 512  # queries are distorted at about phone-crop resolution, then resized


@dataclass
class EvalSet:
    """Templates and seeded distorted queries, already resized (uint8) so that every model sees
    identical pixels. Templates are (T, views, H, W, 3): each as every view it is registered as."""

    name: str
    template_names: list[str]
    templates: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray  # index into templates


@dataclass
class Embeddings:
    templates: np.ndarray  # (T, views, D)
    queries: np.ndarray  # (Q, D)


def build_eval_set(
    folder: str | os.PathLike,
    preprocessing: Preprocessing,
    queries_per_template: int = 2,
    strength: str = "medium",
    seed: int = 0,
    limit: int | None = None,
    on_error: OnError = "raise",
    query_crop: float = 1.0,
    template_pad: float | None = None,
) -> EvalSet:
    """Templates are the images in `folder` (or in `folder/templates` when it has one), each as
    the preprocessing's views (as registered) or, given `template_pad`, in one grey frame that
    share of its sides wide; queries are simulated phone captures (docemb.capture) at `strength`,
    seeded, each centre-cropped to `query_crop` of its sides before resizing (1: whole)."""
    folder = Path(folder)
    root, images, paths = _template_images(folder, limit, on_error)
    rng = np.random.default_rng(seed)
    queries, labels = [], []
    for index, image in enumerate(tqdm(images, desc=f"queries {folder.name}", leave=False, unit="img")):
        for _ in range(queries_per_template):
            queries.append(preprocessing.resize(centre_crop(simulate_capture(image, strength, rng), query_crop)))
            labels.append(index)
    return EvalSet(
        name=f"{folder.parent.name}/{folder.name}",
        template_names=[str(p.relative_to(root)) for p in paths],
        templates=template_inputs(images, registered_as(preprocessing, template_pad)),
        queries=np.stack(queries),
        query_labels=np.asarray(labels, dtype=np.int64),
    )


def _template_images(folder: Path, limit: int | None, on_error: OnError) -> tuple[Path, list[np.ndarray], list[Path]]:
    """The folder holding the templates (`folder/templates` when there is one), and its images."""
    root = folder / "templates" if (folder / "templates").is_dir() else folder
    images, paths = load_images(list_images(root)[:limit], max_side=EVAL_MAX_SIDE, on_error=on_error)
    return root, images, paths


def registered_as(preprocessing: Preprocessing, template_pad: float | None) -> Preprocessing:
    """How templates are drawn for a model: as its contract says, or in the one frame `template_pad`."""
    return preprocessing if template_pad is None else replace(preprocessing, template_frame=template_pad, template_views=())


def template_inputs(images: list[np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    """(T, views, H, W, 3): every view of every template, drawn on every core (numpy and PIL let
    go of the GIL; turning nine views of a few hundred templates took a minute on one core)."""
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return np.stack(list(pool.map(preprocessing.template_inputs, images)))


def framed_templates(folder: str | os.PathLike, preprocessing: Preprocessing, pad: float | None = None) -> np.ndarray:
    """The templates build_eval_set makes of `folder`, as `preprocessing`'s views (or framed by
    `pad`): for models that register them apart but see the same captures, with no capture
    simulated again."""
    _, images, _ = _template_images(Path(folder), None, "raise")
    return template_inputs(images, registered_as(preprocessing, pad))


def capture_preprocessing(preprocessings: Iterable[Preprocessing], what: str) -> Preprocessing:
    """The one preprocessing of the captures that models compared together see; the models may
    register templates apart (Preprocessing.template_frame, template_views), nothing else."""
    unframed = {replace(p, template_frame=0.0, template_views=()) for p in preprocessings}
    if len(unframed) != 1:
        raise DocembError(f"models disagree on preprocessing; {what} models of one input size together")
    return unframed.pop()


def embed_resized(embedder: Embedder, preprocessing: Preprocessing, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Embed uint8 NHWC images already at the model's size."""
    chunks = [embedder(preprocessing.normalize(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def embed_templates(embedder: Embedder, preprocessing: Preprocessing, templates: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(T, views, H, W, 3) uint8 -> (T, views, D) embeddings."""
    flat = embed_resized(embedder, preprocessing, templates.reshape(-1, *templates.shape[2:]), batch_size)
    return flat.reshape(*templates.shape[:2], -1)


def embed_eval_set(embedder: Embedder, preprocessing: Preprocessing, eval_set: EvalSet, batch_size: int = 64) -> Embeddings:
    return Embeddings(
        templates=embed_templates(embedder, preprocessing, eval_set.templates, batch_size),
        queries=embed_resized(embedder, preprocessing, eval_set.queries, batch_size),
    )


def template_scores(queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(Q, T): each query's cosine with each template's best view; templates (T, D) or (T, views, D)."""
    if templates.ndim == 2:
        return queries @ templates.T
    return np.einsum("qd,tvd->qtv", queries, templates, optimize=True).max(axis=2)


def top_templates(queries: np.ndarray, templates: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best templates (by best view) for each query, best first."""
    return top_k_by_score(template_scores(queries, templates), k)


def top_k_indices(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most cosine-similar gallery rows for each query, best first."""
    return top_k_by_score(queries @ gallery.T, k)


def top_k_by_score(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def retrieval_metrics(embeddings: Embeddings, query_labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k: the share of queries whose own template is among their k nearest templates."""
    top = top_templates(embeddings.queries, embeddings.templates, max(ks))
    hits = top == query_labels[:, None]
    return {f"recall@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}


FPR_TARGETS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def pair_scores(embeddings: Embeddings, query_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of every query with every template: (same-document scores, other-document scores)."""
    scores = template_scores(embeddings.queries, embeddings.templates)
    same = np.zeros_like(scores, dtype=bool)
    same[np.arange(len(query_labels)), query_labels] = True
    return scores[same], scores[~same]


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random same-document pair outscores a random other-document pair."""
    ordered = np.sort(negatives)
    below = np.searchsorted(ordered, positives, side="left")
    ties = np.searchsorted(ordered, positives, side="right") - below
    return float(np.mean((below + 0.5 * ties) / len(ordered)))


def tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, targets: tuple[float, ...] = FPR_TARGETS) -> list[dict]:
    """For each target false-positive rate: the match threshold that keeps it, and the share of
    true pairs accepted there. A target below 1 / (number of negative pairs) cannot be measured
    on this set; its row says so (`measurable: False`) and uses the strictest threshold seen."""
    descending = np.sort(negatives)[::-1]
    rows = []
    for target in targets:
        allowed = int(np.floor(target * len(descending)))  # negatives allowed above the threshold
        threshold = float(descending[min(allowed, len(descending) - 1)])
        rows.append(
            {
                "fpr": target,
                "threshold": threshold,
                "tpr": float(np.mean(positives > threshold)),
                "measurable": allowed >= 1,
            }
        )
    return rows


def verification_metrics(embeddings: Embeddings, query_labels: np.ndarray) -> dict[str, float]:
    """AUROC and TPR at FPR 1e-3 / 1e-2 over all query-template pairs (for training logs)."""
    positives, negatives = pair_scores(embeddings, query_labels)
    metrics = {"auroc": roc_auc(positives, negatives)}
    for row in tpr_at_fpr(positives, negatives, (1e-3, 1e-2)):
        metrics[f"tpr@fpr{row['fpr']:.0e}"] = row["tpr"]
    return metrics


def cosine_drift(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Cosine between the two models' embeddings of the same image, row i with row i."""
    if reference.shape != candidate.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {candidate.shape}")
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosines = np.sum(ref * cand, axis=1)
    return {
        "cos_mean": float(cosines.mean()),
        "cos_min": float(cosines.min()),
        "cos_p01": float(np.percentile(cosines, 1)),
        "cos_p05": float(np.percentile(cosines, 5)),
        "cos_p50": float(np.percentile(cosines, 50)),
    }


# A query whose best template beats the second by at least this cosine under the reference
# model is a clear match; int8 noise flips near-ties first, so agreement on clear matches tells
# a quantization that loses rankings from a model whose neighbours sit too close together.
CLEAR_MARGIN = 0.01


def reference_margins(scores: np.ndarray) -> np.ndarray:
    """Per query (a row of query-template `scores`): its best template's score minus its second best's."""
    ordered = np.sort(scores, axis=1)
    return ordered[:, -1] - ordered[:, -2] if ordered.shape[1] > 1 else np.full(len(ordered), np.inf)


def neighbour_agreement(reference: np.ndarray, candidate: np.ndarray, k: int = 1, where: np.ndarray | None = None) -> float:
    """Share of queries (those selected by the boolean mask `where`, or all) whose top-k
    templates (as a set) are the same under both models' query-template scores."""
    ref_top, cand_top = top_k_by_score(reference, k), top_k_by_score(candidate, k)
    same = np.array([set(a) == set(b) for a, b in zip(ref_top.tolist(), cand_top.tolist())])
    return float(same[where].mean() if where is not None else same.mean())


def drift_metrics(reference: Embeddings, candidate: Embeddings) -> dict[str, float]:
    """Drift of `candidate` from `reference` over all templates and queries of one eval set."""
    metrics = cosine_drift(
        np.concatenate([reference.templates.reshape(-1, reference.queries.shape[1]), reference.queries]),
        np.concatenate([candidate.templates.reshape(-1, candidate.queries.shape[1]), candidate.queries]),
    )
    # each model's scores once: with nine views each is nine matmuls
    ref_scores = template_scores(reference.queries, reference.templates)
    cand_scores = template_scores(candidate.queries, candidate.templates)
    metrics["top1_agreement"] = neighbour_agreement(ref_scores, cand_scores, k=1)
    metrics["top5_agreement"] = neighbour_agreement(ref_scores, cand_scores, k=5)
    margins = reference_margins(ref_scores)
    clear = margins >= CLEAR_MARGIN
    metrics["clear_share"] = float(clear.mean())
    metrics["top1_agreement_clear"] = neighbour_agreement(ref_scores, cand_scores, k=1, where=clear) if clear.any() else None
    # the two numbers that explain top-1 agreement: how far apart the reference's best two
    # templates sit, and how far the candidate moves a query-template score
    metrics["margin_median"] = float(np.median(margins))
    metrics["score_error_median"] = float(np.median(np.abs(cand_scores - ref_scores)))
    return metrics
