"""`python -m docemb.train.whiten CKPT --data FOLDER... --out WHITENED`: fit the embedding's
whitening (docemb.whitening) on training images and write the whitened checkpoint.

The reference is a seeded sample of the training pool (`--images`), each image as it is and as
one training-augmented capture. `make pretrain` runs it before evaluating the shipped weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from docemb.contract import thresholds_from
from docemb.errors import DocembError
from docemb.evaluation import build_eval_set
from docemb.imageio import list_images, read_rgb
from docemb.model import EmbeddingModel, load_model, read_model_metadata, save_model
from docemb.train.loop import evaluate_model, write_evaluation
from docemb.whitening import DEFAULT_SHRINK, whitened


def reference_sample(folders: list[Path], count: int, seed: int = 0) -> list[Path]:
    """`count` images drawn evenly from each folder (recursive), seeded."""
    rng = np.random.default_rng(seed)
    per_folder = max(1, count // len(folders))
    picked = []
    for folder in folders:
        paths = list_images(folder)
        if not paths:
            raise DocembError(f"{folder}: no images for the whitening reference")
        picked += [paths[i] for i in sorted(rng.choice(len(paths), min(per_folder, len(paths)), replace=False))]
    return picked


def thresholds(model: EmbeddingModel, eval_folders: list[Path], plots: Path, strength: str = "strong") -> dict:
    """The whitened model's threshold table on held-out sets, as training measures it (its
    scores differ from the unwhitened model's, so the run's table no longer applies)."""
    sets = [build_eval_set(folder, model.preprocessing, 1, strength, seed=0) for folder in eval_folders]
    tables = write_evaluation(sets, evaluate_model(model, sets)[1], plots)
    measured_on = f"the whitened float model, {strength} captures of {', '.join(map(str, eval_folders))}"
    return thresholds_from(tables, measured_on, prefer="realdocs/eval")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.train.whiten", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="training image folders (never evaluation data)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--images", type=int, default=2000, help="reference images, split evenly over the folders (default: 2000)"
    )
    parser.add_argument(
        "--shrink",
        type=float,
        default=DEFAULT_SHRINK,
        help=f"share of the mean variance added to each direction (default: {DEFAULT_SHRINK})",
    )
    parser.add_argument(
        "--eval-data", nargs="+", type=Path, required=True, help="held-out folders the match thresholds are measured on"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        paths = reference_sample(args.data, args.images, args.seed)
        images = [read_rgb(p, max_side=256) for p in paths]
        model = whitened(load_model(args.checkpoint), images, args.shrink, args.seed)
        metadata = read_model_metadata(args.checkpoint)
        metadata.pop("model_config", None)
        metadata["whitening"] = {
            "reference": [str(f) for f in args.data],
            "images": len(paths),
            "shrink": args.shrink,
            "seed": args.seed,
        }
        save_model(args.out, model, metadata)
    except DocembError as exc:
        raise SystemExit(f"docemb whiten: error: {exc}") from None
    print(f"wrote {args.out} (whitening fitted on {len(paths)} images and a capture of each)")


if __name__ == "__main__":
    main()
