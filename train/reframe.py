"""Register templates anew with released weights: `python -m docemb.train.reframe WEIGHTS
--frame 0.05 --views 0.05:0 0:-6 ... --eval-data A B --out NEW`.

The weights stay as they are. Their model config says how templates are registered from now on
(`Preprocessing.template_frame`, `template_views`), and the held-out figures and match
thresholds are measured again with templates registered that way, on the captures a training
run's last epoch measures (its saved train config: queries per template, strength, seed). The
card is the old one with a section saying what changed and what was measured.
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

from docemb.atomic import write_text
from docemb.contract import sha256, thresholds_from
from docemb.errors import DocembError
from docemb.model import load_model, read_model_metadata, save_model
from docemb.preprocess import TemplateView
from docemb.train.config import TrainConfig, parse_views
from docemb.train.release import figure_lines


def reframe(
    weights: Path,
    frame: float | None,
    eval_data: list[str],
    out: Path,
    plots: Path,
    figures: Path | None = None,
    views: tuple[TemplateView, ...] | None = None,
) -> Path:
    """Write `out` (weights, thresholds measured with templates in frame `frame` and registered
    as `views`; None keeps the weights' own) and its card (with the `docemb evaluate` JSON
    `figures`), and the held-out ROC, score and retrieval plots into `plots`; returns the card's path."""
    from docemb.train.loop import evaluate_model, held_out_set, write_evaluation

    metadata = read_model_metadata(weights)
    if "train_config" not in metadata:
        raise DocembError(f"{weights}: no train config inside; reframe released docemb weights")
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in metadata["train_config"].items() if k in known})
    model = load_model(weights)
    frame = model.config.template_frame if frame is None else frame
    views = model.config.template_views if views is None else views
    model.config = replace(model.config, template_frame=frame, template_views=views)  # checks the frame's range
    registered = _registration(model.preprocessing.views)
    sets = [held_out_set(config, path, model) for path in eval_data]
    metrics, embeddings = evaluate_model(model, sets)
    table = write_evaluation(sets, embeddings, plots)
    measured_on = f"the float model, held-out queries against templates {registered} (python -m docemb.train.reframe)"
    metadata["thresholds"] = thresholds_from(table, measured_on, prefer="realdocs/eval")
    source = {
        "weights": weights.name,
        "sha256": sha256(weights),
        "template_frame": frame,
        "registered": registered,
        "held_out": metrics,
    }
    metadata["reframed_from"] = source
    metadata.pop("model_config")
    save_model(out, model, metadata)
    card = out.with_suffix(".md")
    write_text(card, _card(weights, out, source, metadata["thresholds"]["match"], figures))
    return card


def _registration(views: tuple[TemplateView, ...]) -> str:
    """How templates are registered, in words: "framed by 0.05" or "as 9 views (frame/degrees ...)"."""
    if len(views) == 1 and views[0].degrees == 0:
        return f"framed by {views[0].frame}"
    return f"as {len(views)} views (frame/degrees " + ", ".join(f"{v.frame:g}/{v.degrees:g}" for v in views) + ")"


def _card(weights: Path, out: Path, source: dict, match: dict, figures: Path | None) -> str:
    registered, metrics = source["registered"], source["held_out"]
    old = weights.with_suffix(".md")
    body = old.read_text().split("\n", 1)[1] if old.is_file() else "\n(no card beside the source weights)\n"
    return "\n".join(
        [
            f"# {out.name}",
            "",
            f"The weights of `{weights.name}` (sha256 `{source['sha256']}`), unchanged; templates are now registered",
            f"{registered}: each view a grey frame that share of each side wide, then a turn by that many degrees (the",
            "contract's `preprocessing.template_views`), and a photo scores a template's best view. The held-out figures and",
            "match threshold below were measured with templates registered so (`python -m docemb.train.reframe`). Match threshold",
            f"{match['threshold']:.4f} at FPR {match['fpr']} on {match['eval_set']} (TPR {match['tpr']:.3f}).",
            "",
            *(figure_lines(figures) + [""] if figures else []),
            "Held-out metrics with templates so registered:",
            "",
            *[f"- {key}: {value:.3f}" for key, value in metrics.items()],
            "",
            f"## The card of {weights.name}",
            body,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.train.reframe", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("--frame", type=float, help="grey frame around templates, share of each side (default: the weights')")
    parser.add_argument(
        "--views", nargs="+", metavar="FRAME:DEGREES", help="views each template is registered as (default: the weights')"
    )
    parser.add_argument("--eval-data", nargs="+", required=True, metavar="FOLDER", help="held-out template folders")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (its card goes beside it as .md)")
    parser.add_argument("--figures", type=Path, help="JSON written by `docemb evaluate --out`, for the card")
    parser.add_argument(
        "--plots", type=Path, default=Path("runs/reframe"), help="folder for the held-out plots (default: runs/reframe)"
    )
    args = parser.parse_args()
    try:
        views = parse_views(args.views) if args.views else None
        card = reframe(args.weights, args.frame, args.eval_data, args.out, args.plots, args.figures, views)
        print(f"wrote {args.out} and {card}; plots in {args.plots}")
    except DocembError as exc:
        raise SystemExit(f"reframe: error: {exc}") from None


if __name__ == "__main__":
    main()
