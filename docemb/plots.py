"""Figures people would rather look at than read: ROC, score histograms, retrieval grids.

Each function writes one PNG atomically and returns its path. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

# isort: split
import matplotlib.pyplot as plt
import numpy as np

from docemb.atomic import atomic_path
from docemb.evaluation import EvalSet, template_scores, top_k_by_score


def _save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(figure)
    return path


def roc_curve(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """TPR against FPR (log scale, where match thresholds live), one line per model or set."""
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    for label, (positives, negatives) in curves.items():
        thresholds = np.unique(np.concatenate([positives, negatives]))
        # share of each kind of pair scoring at or above each threshold
        fpr = 1 - np.searchsorted(np.sort(negatives), thresholds, side="left") / len(negatives)
        tpr = 1 - np.searchsorted(np.sort(positives), thresholds, side="left") / len(positives)
        keep = fpr > 0
        axis.plot(fpr[keep], tpr[keep], label=label)
    axis.set_xscale("log")
    axis.set_xlabel("false positive rate (other document accepted)")
    axis.set_ylabel("true positive rate (own template accepted)")
    axis.set_ylim(0, 1.01)
    axis.grid(alpha=0.3, which="both")
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title or "ROC of query-template pairs")
    return _save(figure, Path(path))


def score_histograms(positives: np.ndarray, negatives: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Cosine of same-document and other-document pairs; their overlap is where matches fail."""
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    bins = np.linspace(min(positives.min(), negatives.min()), 1.0, 60)
    axis.hist(negatives, bins=bins, density=True, alpha=0.6, label=f"other document ({len(negatives)})")
    axis.hist(positives, bins=bins, density=True, alpha=0.6, label=f"same document ({len(positives)})")
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("density")
    axis.legend(fontsize=8)
    axis.set_title(title or "query-template scores")
    return _save(figure, Path(path))


def retrieval_grid(
    eval_set: EvalSet,
    query_embeddings: np.ndarray,
    template_embeddings: np.ndarray,
    path: str | Path,
    k: int = 5,
    rows: int = 8,
) -> Path:
    """Each row: a distorted query, then its top-k templates (green frame: its own template)."""
    picks = np.linspace(0, len(eval_set.queries) - 1, min(rows, len(eval_set.queries))).astype(int)
    scores = template_scores(query_embeddings[picks], template_embeddings)
    top = top_k_by_score(scores, k)
    figure, axes = plt.subplots(len(picks), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(picks)), squeeze=False, layout="constrained")
    for row, (query_index, neighbours) in enumerate(zip(picks, top)):
        axes[row, 0].imshow(eval_set.queries[query_index])
        axes[row, 0].set_title("query", fontsize=7)
        for column, template_index in enumerate(neighbours, start=1):
            axis = axes[row, column]
            axis.imshow(eval_set.templates[template_index, 0])  # its first view
            correct = template_index == eval_set.query_labels[query_index]
            axis.set_title(f"{scores[row, template_index]:.3f}", fontsize=7, color="green" if correct else "black")
            for spine in axis.spines.values():
                spine.set_edgecolor("green" if correct else "lightgrey")
                spine.set_linewidth(3 if correct else 1)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{eval_set.name}: query and top-{k} templates", fontsize=9)
    return _save(figure, Path(path))


def image_rows(rows: list[list[tuple[np.ndarray, str]]], path: str | Path, title: str = "") -> Path:
    """Each row: images side by side, each titled with its caption."""
    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.0 * len(rows)), squeeze=False, layout="constrained")
    for axis_row, row in zip(axes, rows):
        for axis, (image, caption) in zip(axis_row, row):
            axis.imshow(image)
            axis.set_title(caption, fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        if not axis.images:
            axis.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9)
    return _save(figure, Path(path))


def latency_vs_drift(points: dict[str, tuple[float, float]], path: str | Path, title: str = "") -> Path:
    """One dot per model: latency (x) against cosine to the float model (y). Up and left is better."""
    figure, axis = plt.subplots(figsize=(6, 4.2))
    for label, (latency_ms, cosine) in points.items():
        axis.scatter(latency_ms, cosine, s=36)
        axis.annotate(label, (latency_ms, cosine), fontsize=7, xytext=(4, 3), textcoords="offset points")
    axis.set_xlabel("latency p50 (ms, batch 1)")
    axis.set_ylabel("cosine to float, mean (worst eval set)")
    axis.grid(alpha=0.3)
    axis.set_title(title or "latency against drift")
    return _save(figure, Path(path))


def latency_distributions(times_ms: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Box plot of every timed run per model and runtime: the tail matters as much as the median."""
    labels = list(times_ms)
    figure, axis = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.4))
    axis.boxplot([times_ms[label] for label in labels], vert=False, showfliers=True, flierprops={"markersize": 2})
    axis.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    axis.set_xscale("log")
    axis.set_xlabel("ms per inference (log scale)")
    axis.grid(alpha=0.3, axis="x", which="both")
    axis.set_title(title or "latency distributions")
    return _save(figure, Path(path))


def score_histogram_grid(scores: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "") -> Path:
    """score_histograms() for several models side by side, on shared axes."""
    columns = min(3, len(scores))
    rows = -(-len(scores) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), sharex=True, squeeze=False)
    low = min(min(p.min(), n.min()) for p, n in scores.values())
    bins = np.linspace(low, 1.0, 50)
    for axis, (label, (positives, negatives)) in zip(axes.flat, scores.items()):
        axis.hist(negatives, bins=bins, density=True, alpha=0.6, label="other document")
        axis.hist(positives, bins=bins, density=True, alpha=0.6, label="same document")
        axis.set_title(label, fontsize=8)
    for axis in list(axes.flat)[len(scores) :]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.suptitle(title or "query-template scores")
    return _save(figure, Path(path))


def query_grid(
    results: list[tuple[str, list[str], list[float]]], path: str | Path, thumb: int = 160, first: str = "query"
) -> Path:
    """Each row: a query image (titled `first`), then its results with their scores (the
    output of `docemb search`; a group's first image and the others for `docemb dedup`)."""
    from docemb.imageio import read_rgb

    k = max((len(paths) for _, paths, _ in results), default=1)
    figure, axes = plt.subplots(
        len(results), k + 1, figsize=(1.6 * (k + 1), 1.7 * len(results)), squeeze=False, layout="constrained"
    )
    for row, (query, paths, scores) in enumerate(results):
        axes[row, 0].imshow(read_rgb(query, thumb))
        axes[row, 0].set_title(first, fontsize=7)
        for column, (hit, score) in enumerate(zip(paths, scores), start=1):
            axes[row, column].imshow(read_rgb(hit, thumb))
            axes[row, column].set_title(f"{score:.3f}", fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
        if not axis.images:
            axis.set_axis_off()
    return _save(figure, Path(path))


def collection_map(xy: np.ndarray, groups: list[str], path: str | Path, title: str = "") -> Path:
    """A scatter of a collection's 2-D map, one colour per group (at most 20 named in the legend)."""
    names = sorted(set(groups))
    figure, axis = plt.subplots(figsize=(8, 8))
    colours = plt.get_cmap("tab20")
    index = np.asarray([names.index(g) for g in groups])
    for i, name in enumerate(names):
        pick = index == i
        axis.scatter(xy[pick, 0], xy[pick, 1], s=6, color=colours(i % 20), label=name if i < 20 else None, alpha=0.8)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title or f"{len(xy)} images, {len(names)} groups")
    if len(names) > 1:
        axis.legend(markerscale=2, fontsize=7, loc="best")
    return _save(figure, Path(path))


def verification_summary(rows: list[dict], ms_per_query: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Left: Recall@1 by cosine (dashed) and verified (solid) per strength and kind of template;
    right: time per query against shortlist length, one line per strength."""
    figure, (recall_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 4.2))
    strengths = list(dict.fromkeys(row["strength"] for row in rows))
    for group in dict.fromkeys(row["group"] for row in rows):
        picked = {row["strength"]: row for row in rows if row["group"] == group}
        x = [strengths.index(s) for s in picked]
        (line,) = recall_axis.plot(x, [r["recall_verified"] for r in picked.values()], marker="o", label=f"{group}, verified")
        recall_axis.plot(
            x, [r["recall_cosine"] for r in picked.values()], ls="--", color=line.get_color(), label=f"{group}, cosine"
        )
    recall_axis.set_xticks(range(len(strengths)), strengths)
    recall_axis.set_ylabel("Recall@1")
    recall_axis.set_ylim(0, 1.01)
    recall_axis.grid(alpha=0.3)
    recall_axis.legend(fontsize=7, loc="lower left")
    for strength, times in ms_per_query.items():
        shortlist = sorted(times, key=int)
        time_axis.plot([int(k) for k in shortlist], [times[k] for k in shortlist], marker="o", label=strength)
    time_axis.set_xscale("log")
    time_axis.set_yscale("log")
    time_axis.set_xlabel("templates verified per query (K)")
    time_axis.set_ylabel("ms per query, one thread")
    time_axis.grid(alpha=0.3, which="both")
    time_axis.legend(fontsize=7)
    figure.suptitle(title or "geometric verification: what it adds and what it costs")
    return _save(figure, Path(path))


def ablation_bars(values: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """A panel per figure ("set/metric": a row per eval set, a column per metric), a bar per
    variant, the first variant (the base) as a dashed line: each change's gain or loss is its
    bar's distance from that line."""
    keys = list(next(iter(values.values())))
    sets = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in keys))
    metrics = list(dict.fromkeys(k.rsplit("/", 1)[1] for k in keys))
    variants = list(values)
    figure, axes = plt.subplots(
        len(sets), len(metrics), figsize=(3.2 * len(metrics) + 1.5, (0.3 * len(variants) + 1.0) * len(sets)), squeeze=False
    )
    for (row, name), (column, metric) in itertools.product(enumerate(sets), enumerate(metrics)):
        axis, key = axes[row, column], f"{name}/{metric}"
        bars = [values[v].get(key, np.nan) for v in variants]
        axis.barh(range(len(variants)), bars, color=["tab:gray"] + ["tab:blue"] * (len(variants) - 1))
        axis.axvline(bars[0], color="k", linestyle="--", linewidth=0.8)
        axis.set_xlim(0.5 if metric == "auroc" else 0, 1)  # AUROC's chance level is 0.5
        axis.set_title(key, fontsize=8)
        axis.grid(alpha=0.3, axis="x")
        axis.set_yticks(range(len(variants)), variants if column == 0 else [], fontsize=7)
        axis.invert_yaxis()
    figure.suptitle(title or "ablation", fontsize=9)
    figure.tight_layout()
    return _save(figure, Path(path))
