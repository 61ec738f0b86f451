"""`python -m docemb.benchmark.multiview MODEL --data EVAL_FOLDER`: does registering each template
also as a few simulated captures help matching?

Each template is embedded clean and as N views of the training augmentation
(docemb.photo.capture_augmentation: the evaluation's captures are docemb.capture's, written
apart, so the views do not imitate the queries). Two ways to use the views: their mean with the
clean embedding as the template (one vector per template: the store format and the Android core
stay as they are), or the best score over the views (N + 1 vectors per template). Per strength:
Recall@1 and open-set TPR at FPR 1e-2 against the folder's `unknown/` captures.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.atomic import write_json
from docemb.benchmark.quality import open_set
from docemb.capture import CAPTURE_STRENGTHS
from docemb.embedders import Embedder, load_embedder
from docemb.evaluation import EVAL_MAX_SIDE, build_eval_set, embed_resized
from docemb.imageio import list_images, load_images
from docemb.photo import capture_augmentation, distort
from docemb.preprocess import Preprocessing


@dataclass(frozen=True)
class MultiviewRow:
    strength: str
    templates: str  # "clean", "mean of N views", "max over N views"
    recall_at_1: float
    tpr_at_fpr: float | None


def _scores(queries: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Best score of each query with each template over the template's vectors: (Q, T)."""
    return np.einsum("qd,tvd->qtv", queries, templates).max(axis=2)


def _views(folder: Path, count: int, embed: Embedder, prep: Preprocessing, seed: int = 0) -> np.ndarray:
    """(T, count, D) embeddings of `count` training-augmentation views of each template, made at
    the resolution the evaluation's captures are made at."""
    root = folder / "templates" if (folder / "templates").is_dir() else folder
    images, _ = load_images(list_images(root), max_side=EVAL_MAX_SIDE)
    pipeline = capture_augmentation(seed=seed)
    views = [prep.resize(distort(image, pipeline)) for image in tqdm(images, desc="views", leave=False) for _ in range(count)]
    return embed_resized(embed, prep, np.stack(views)).reshape(len(images), count, -1)


def benchmark(model: Path, folder: Path, views: list[int], strengths: list[str]) -> list[MultiviewRow]:
    embed, prep = load_embedder(model)
    first = build_eval_set(folder, prep, 1, strengths[0], seed=0)
    clean = embed_resized(embed, prep, first.templates)
    extra = _views(folder, max(views), embed, prep)
    variants = {"clean": clean[:, None]}
    for n in views:
        stacked = np.concatenate([clean[:, None], extra[:, :n]], axis=1)
        mean = stacked.sum(axis=1)
        variants[f"mean of {n} views"] = (mean / np.linalg.norm(mean, axis=1, keepdims=True))[:, None]
        variants[f"max over {n} views"] = stacked
    rows = []
    for strength in strengths:
        eval_set = build_eval_set(folder, prep, 1, strength, seed=0)
        queries = embed_resized(embed, prep, eval_set.queries)
        unknown = folder / "unknown"
        impostors = (
            embed_resized(embed, prep, build_eval_set(unknown, prep, 1, strength, seed=1).queries) if unknown.is_dir() else None
        )
        for name, templates in variants.items():
            scores = _scores(queries, templates)
            correct = scores.argmax(axis=1) == eval_set.query_labels
            tpr = (
                open_set(scores.max(axis=1), correct, _scores(impostors, templates).max(axis=1))[0]
                if impostors is not None
                else None
            )
            rows.append(MultiviewRow(strength, name, float(correct.mean()), tpr))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="eval folder (templates/ and optional unknown/)")
    parser.add_argument("--views", type=int, nargs="+", default=[4, 8], help="views per template to try")
    parser.add_argument("--strengths", nargs="+", choices=CAPTURE_STRENGTHS, default=list(CAPTURE_STRENGTHS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = benchmark(args.model, args.data, args.views, args.strengths)
    print(f"{'strength':<8} {'templates':<18} {'R@1':>6} {'TPR@1e-2':>8}")
    for r in rows:
        tpr = f"{r.tpr_at_fpr:8.3f}" if r.tpr_at_fpr is not None else f"{'-':>8}"
        print(f"{r.strength:<8} {r.templates:<18} {r.recall_at_1:6.3f} {tpr}")
    means = {}
    for r in rows:
        means.setdefault(r.templates, []).append(r.recall_at_1)
    print("R@1 mean over strengths: " + "  ".join(f"{name} {np.mean(v):.3f}" for name, v in means.items()))
    if args.out:
        write_json(args.out, {"model": str(args.model), "data": str(args.data), "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
