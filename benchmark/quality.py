"""`docemb evaluate`: how well models match simulated phone captures, at every capture strength.

For each eval folder and strength (docemb.capture: mild, medium, strong, hard) every model
embeds the same seeded captures. Reported per group of templates (pages, near-duplicate second
pages, cards, ...: the `kind` column of a manifest.csv in or above the folder, else the file
name's leading letters): Recall@1/@5; and, when the folder has an `unknown/` set, open-set
identification: the threshold that lets 1 % of captures of unknown documents through, and the
share of known captures matched to the right template above it (TPR at FPR 1e-2).
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from docemb.atomic import write_json
from docemb.capture import CAPTURE_STRENGTHS
from docemb.errors import DocembError
from docemb.evaluation import (
    EvalSet,
    build_eval_set,
    capture_preprocessing,
    embed_resized,
    embed_templates,
    framed_templates,
    registered_as,
    template_scores,
    top_k_by_score,
)
from docemb.preprocess import Preprocessing, check_crop, check_frame

OPEN_SET_FPR = 1e-2


@dataclass(frozen=True)
class QualityRow:
    """One model on one eval set at one strength, for one group of templates ('all' = every one)."""

    model: str
    eval_set: str
    strength: str
    group: str
    queries: int
    recall_at_1: float
    recall_at_5: float
    tpr_at_fpr: float | None  # open-set TPR at OPEN_SET_FPR, None without impostors
    threshold: float | None
    template_frame: float  # the grey frame the templates were embedded in (docemb.preprocess.loose_frame)
    template_views: int = 1  # views per template, each query scoring a template's best (Preprocessing.views)


def manifest_rows(images: Path) -> tuple[Path, list[dict[str, str]]] | None:
    """The rows of the manifest.csv in the image folder `images` or one of the two above it; of
    a manifest for several splits (realdocs), this folder's split's rows when it names them."""
    manifest = next((m for m in (images, images.parent, images.parent.parent) if (m / "manifest.csv").is_file()), None)
    if manifest is None:
        return None
    with open(manifest / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "split" in rows[0]:
        rows = [row for row in rows if row["split"] == f"{images.parent.name}/{images.name}"] or rows
    return manifest / "manifest.csv", rows


def template_kinds(folder: Path, template_names: list[str]) -> list[str]:
    """Each template's kind: from a manifest.csv (name, kind columns) beside the templates or
    above them (manifest_rows), else the leading letters of its file name (page0003 -> page)."""
    found = manifest_rows(folder / "templates" if (folder / "templates").is_dir() else folder)
    rows = found[1] if found else []
    if rows and {"name", "kind"} <= set(rows[0]):
        kinds = {Path(row["name"]).stem: row["kind"] for row in rows}
        if all(Path(name).stem in kinds for name in template_names):
            return [kinds[Path(name).stem] for name in template_names]
    return [re.match(r"[A-Za-z_-]*", Path(name).stem).group(0).strip("_-") or "other" for name in template_names]


def open_set(best: np.ndarray, correct: np.ndarray, impostor_best: np.ndarray, fpr: float = OPEN_SET_FPR) -> tuple[float, float]:
    """(TPR, threshold): the threshold lets at most `fpr` of impostor captures through; TPR is the
    share of known captures whose best template is right and scores above it."""
    descending = np.sort(impostor_best)[::-1]
    threshold = float(descending[min(int(np.floor(fpr * len(descending))), len(descending) - 1)])
    return float(np.mean(correct & (best > threshold))), threshold


def _rows(
    model: str,
    eval_set: EvalSet,
    strength: str,
    kinds: list[str],
    templates: np.ndarray,
    queries: np.ndarray,
    impostors: np.ndarray | None,
    registered: Preprocessing,
) -> list[QualityRow]:
    scores = template_scores(queries, templates)
    top = top_k_by_score(scores, 5)
    best, correct = scores.max(axis=1), top[:, 0] == eval_set.query_labels
    impostor_best = template_scores(impostors, templates).max(axis=1) if impostors is not None else None
    query_kinds = np.asarray(kinds)[eval_set.query_labels]
    rows = []
    for group in ["all", *sorted(set(kinds))]:
        pick = np.ones(len(queries), bool) if group == "all" else query_kinds == group
        tpr, threshold = open_set(best[pick], correct[pick], impostor_best) if impostor_best is not None else (None, None)
        rows.append(
            QualityRow(
                model,
                eval_set.name,
                strength,
                group,
                int(pick.sum()),
                float(correct[pick].mean()),
                float((top[pick] == eval_set.query_labels[pick, None]).any(axis=1).mean()),
                tpr,
                threshold,
                registered.template_frame,
                len(registered.views),
            )
        )
    return rows


def model_labels(models: list[Path]) -> dict[Path, str]:
    """Each model's file name, or its path where two share a name (two runs' model.safetensors),
    so neither hides the other in the summary."""
    names = [path.name for path in models]
    return {path: path.name if names.count(path.name) == 1 else str(path) for path in models}


def evaluate_models(
    models: list[Path],
    folders: list[Path],
    strengths: tuple[str, ...] = CAPTURE_STRENGTHS,
    queries_per_template: int = 2,
    seed: int = 0,
    query_crop: float = 1.0,
    template_pad: float | None = None,
) -> list[QualityRow]:
    """Every model on every folder and strength; all models see the very same captures (known
    and unknown alike centre-cropped to `query_crop`, docemb.preprocess.centre_crop), and
    templates drawn as each model's contract registers them (frame and views), or all in the one
    frame `template_pad`."""
    from docemb.embedders import load_embedder

    embedders = {path: load_embedder(path) for path in models}
    labels = model_labels(models)
    prep = capture_preprocessing((p for _, p in embedders.values()), "evaluate")
    registers = {path: registered_as(p, template_pad) for path, (_, p) in embedders.items()}
    rows = []
    for folder in folders:
        unknown = folder / "unknown"
        drawn = {p: framed_templates(folder, p) for p in set(registers.values())}
        templates_of = {path: embed_templates(embed, prep, drawn[registers[path]]) for path, (embed, _) in embedders.items()}
        for strength in strengths:  # the templates (embedded above, as each model frames them) are the same at every strength
            eval_set = build_eval_set(folder, prep, queries_per_template, strength, seed=seed, query_crop=query_crop)
            kinds = template_kinds(folder, eval_set.template_names)
            impostor_set = (
                build_eval_set(unknown, prep, queries_per_template, strength, seed=seed + 1, query_crop=query_crop)
                if unknown.is_dir()
                else None
            )
            for path, (embed, _) in embedders.items():
                queries = embed_resized(embed, prep, eval_set.queries)
                impostors = embed_resized(embed, prep, impostor_set.queries) if impostor_set else None
                rows.extend(
                    _rows(labels[path], eval_set, strength, kinds, templates_of[path], queries, impostors, registers[path])
                )
    return rows


def format_table(rows: list[QualityRow]) -> str:
    lines = [
        f"{'model':<34} {'eval set':<20} {'strength':<8} {'group':<14} {'queries':>7} {'R@1':>6} {'R@5':>6} {'TPR@1e-2':>8} {'thresh':>7} {'frame':>5} {'views':>5}"
    ]
    for row in rows:
        tpr = f"{row.tpr_at_fpr:8.3f}" if row.tpr_at_fpr is not None else f"{'-':>8}"
        threshold = f"{row.threshold:7.3f}" if row.threshold is not None else f"{'-':>7}"
        lines.append(
            f"{row.model[-34:]:<34} {row.eval_set[-20:]:<20} {row.strength:<8} {row.group[:14]:<14} {row.queries:>7} "
            f"{row.recall_at_1:6.3f} {row.recall_at_5:6.3f} {tpr} {threshold} {row.template_frame:5.2f} {row.template_views:>5}"
        )
    return "\n".join(lines)


def summary(rows: list[QualityRow]) -> dict[str, dict[str, float]]:
    """Per model and eval set: Recall@1 over every strength and at the hard one (the issue's two bars)."""
    result: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.group == "all":
            key = f"{row.model} {row.eval_set}"
            result.setdefault(key, {})[row.strength] = row.recall_at_1
    for values in result.values():
        values["mean over strengths"] = float(np.mean([values[s] for s in CAPTURE_STRENGTHS if s in values]))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models", nargs="+", type=Path, help="docemb checkpoints (.safetensors) or exported .onnx / .tflite models"
    )
    parser.add_argument(
        "--data", nargs="+", type=Path, required=True, help="eval folders (templates/ and optional unknown/ inside)"
    )
    parser.add_argument("--strengths", nargs="+", choices=CAPTURE_STRENGTHS, default=list(CAPTURE_STRENGTHS))
    parser.add_argument("--queries", type=int, default=2, help="captures per template and strength (default: 2)")
    add_scale_arguments(parser)
    parser.add_argument("--out", type=Path, help="write the rows and summary as JSON here")


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """How the embedding sees captures and templates (docemb.preprocess.centre_crop, loose_frame)."""
    parser.add_argument(
        "--query-crop",
        type=float,
        default=1.0,
        help="keep this centre share of each capture's sides before embedding it (default 1: the whole capture)",
    )
    parser.add_argument(
        "--template-pad",
        type=float,
        help="embed each template once, in a grey frame this share of its sides wide (default: the views the model contract registers)",
    )


def scale_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with --query-crop or --template-pad, naming the flag; None when both are fine."""
    for flag, value, check in (("--query-crop", args.query_crop, check_crop), ("--template-pad", args.template_pad, check_frame)):
        if value is None:
            continue
        try:
            check(value)
        except ValueError as error:
            return f"{flag} {value}: {error}"
    return None


def run(args: argparse.Namespace) -> None:
    if problem := scale_problem(args):
        raise DocembError(problem)
    for folder in args.data:
        if not folder.is_dir():
            raise DocembError(f"{folder}: eval folder not found")
    rows = evaluate_models(
        args.models, args.data, tuple(args.strengths), args.queries, query_crop=args.query_crop, template_pad=args.template_pad
    )
    print(format_table(rows))
    print()
    for key, values in summary(rows).items():
        print(f"{key}: " + "  ".join(f"{name} {value:.3f}" for name, value in values.items()))
    if args.out:
        write_json(
            args.out,
            {
                "rows": [asdict(row) for row in rows],
                "summary": summary(rows),
                "query_crop": args.query_crop,
                "template_pad": args.template_pad,
            },
        )
        print(f"wrote {args.out}")
