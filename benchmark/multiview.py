"""`python -m docemb.benchmark.multiview MODEL --data EVAL_FOLDER`: does registering each template
as several views help matching?

Each template is embedded as the model's contract registers it and as views of two kinds: the
fixed geometric views of every `--frames` x `--rotations` pair (a grey frame, then a turn;
docemb.preprocess.TemplateView), and N random views of the training augmentation
(docemb.photo.capture_augmentation: the evaluation's captures are docemb.capture's, written
apart, so neither kind imitates the queries). Random views are used as their mean with the first
registered view (one vector per template) or as the best score over them; geometric views as
the best score, as the contract's views are used. Per strength: Recall@1 and open-set TPR at
FPR 1e-2 against the folder's `unknown/` captures.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.atomic import write_json
from docemb.benchmark.quality import open_set
from docemb.capture import CAPTURE_STRENGTHS
from docemb.embedders import Embedder, load_embedder
from docemb.evaluation import EVAL_MAX_SIDE, build_eval_set, embed_resized, embed_templates, framed_templates, template_scores
from docemb.imageio import list_images, load_images
from docemb.photo import capture_augmentation, distort
from docemb.preprocess import Preprocessing, TemplateView


@dataclass(frozen=True)
class MultiviewRow:
    strength: str
    templates: str  # "as registered (N views)", "mean of N random", "max over N random", "max over N geometric"
    recall_at_1: float
    tpr_at_fpr: float | None


def _random_views(folder: Path, count: int, embed: Embedder, prep: Preprocessing, seed: int = 0) -> np.ndarray:
    """(T, count, D) embeddings of `count` training-augmentation views of each template, made at
    the resolution the evaluation's captures are made at."""
    root = folder / "templates" if (folder / "templates").is_dir() else folder
    images, _ = load_images(list_images(root), max_side=EVAL_MAX_SIDE)
    pipeline = capture_augmentation(seed=seed)
    views = [prep.resize(distort(image, pipeline)) for image in tqdm(images, desc="views", leave=False) for _ in range(count)]
    return embed_resized(embed, prep, np.stack(views)).reshape(len(images), count, -1)


def geometric_grid(frames: list[float], rotations: list[float]) -> tuple[TemplateView, ...]:
    """Every frame with every turn, unturned first."""
    return tuple(TemplateView(f, r) for r in sorted(rotations, key=abs) for f in frames)


def _variants(
    folder: Path, embed: Embedder, prep: Preprocessing, random_counts: list[int], grid: tuple[TemplateView, ...]
) -> dict[str, np.ndarray]:
    """Each way of registering the templates: (T, vectors, D) embeddings."""
    registered = embed_templates(embed, prep, framed_templates(folder, prep))
    variants = {f"as registered ({registered.shape[1]} views)": registered}
    if grid:
        drawn = framed_templates(folder, replace(prep, template_views=grid))
        variants[f"max over {len(grid)} geometric"] = embed_templates(embed, prep, drawn)
    extra = _random_views(folder, max(random_counts), embed, prep) if random_counts else None
    for n in random_counts:
        stacked = np.concatenate([registered[:, :1], extra[:, :n]], axis=1)
        mean = stacked.sum(axis=1)
        variants[f"mean of {n} random"] = (mean / np.linalg.norm(mean, axis=1, keepdims=True))[:, None]
        variants[f"max over {n} random"] = stacked
    return variants


def benchmark(
    model: Path, folder: Path, random_counts: list[int], strengths: list[str], grid: tuple[TemplateView, ...] = ()
) -> list[MultiviewRow]:
    embed, prep = load_embedder(model)
    variants = _variants(folder, embed, prep, random_counts, grid)
    rows = []
    for strength in strengths:
        eval_set = build_eval_set(folder, prep, 1, strength, seed=0)
        queries = embed_resized(embed, prep, eval_set.queries)
        unknown = folder / "unknown"
        impostors = (
            embed_resized(embed, prep, build_eval_set(unknown, prep, 1, strength, seed=1).queries) if unknown.is_dir() else None
        )
        for name, templates in variants.items():
            scores = template_scores(queries, templates)
            correct = scores.argmax(axis=1) == eval_set.query_labels
            tpr = (
                open_set(scores.max(axis=1), correct, template_scores(impostors, templates).max(axis=1))[0]
                if impostors is not None
                else None
            )
            rows.append(MultiviewRow(strength, name, float(correct.mean()), tpr))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="eval folder (templates/ and optional unknown/)")
    parser.add_argument("--views", type=int, nargs="*", default=[8], help="random views per template to try")
    parser.add_argument("--frames", type=float, nargs="*", default=[0.0, 0.05, 0.10], help="geometric views: frames")
    parser.add_argument("--rotations", type=float, nargs="*", default=[-6.0, 0.0, 6.0], help="geometric views: degrees")
    parser.add_argument("--strengths", nargs="+", choices=CAPTURE_STRENGTHS, default=list(CAPTURE_STRENGTHS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows = benchmark(args.model, args.data, args.views, args.strengths, geometric_grid(args.frames, args.rotations))
    print(f"{'strength':<8} {'templates':<24} {'R@1':>6} {'TPR@1e-2':>8}")
    for r in rows:
        tpr = f"{r.tpr_at_fpr:8.3f}" if r.tpr_at_fpr is not None else f"{'-':>8}"
        print(f"{r.strength:<8} {r.templates:<24} {r.recall_at_1:6.3f} {tpr}")
    means = {}
    for r in rows:
        means.setdefault(r.templates, []).append(r.recall_at_1)
    print("R@1 mean over strengths: " + "  ".join(f"{name} {np.mean(v):.3f}" for name, v in means.items()))
    if args.out:
        write_json(args.out, {"model": str(args.model), "data": str(args.data), "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
