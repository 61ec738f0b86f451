"""Ship a training run as weights: `python -m docemb.train.release RUN_DIR --out weights/NAME.safetensors`.

Copies the run's model and writes a card beside it saying how it was made (recipe command,
resolved config, data sources with the corpus manifest's sha256, commit, wall time, hardware)
and what it reaches (the `docemb evaluate` JSON given with --figures).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from docemb.atomic import atomic_path, write_json, write_text
from docemb.contract import threshold_table
from docemb.errors import DocembError
from docemb.model import read_model_metadata
from docemb.train.state import code_commit

RECIPE = "make pretrain  (docemb corpus, then docemb train --config configs/pretrain.yaml)"
STORAGE = {"float16": torch.float16, "float32": torch.float32}  # of kernels and matrices in a released file


def _corpus_manifests(config: dict) -> list[str]:
    """sha256 of the manifest of each corpus the run drew from (corpus.json beside its pieces)."""
    lines = []
    for source in config.get("data", []):
        path = Path(source.split(":", 1)[-1].rsplit("@", 1)[0]).expanduser()
        summary = path.parent / "corpus.json"
        if summary.is_file():
            data = json.loads(summary.read_text())
            line = f"`{summary.parent}`: {data['images']} images {data['pieces']}, manifest sha256 `{data['manifest_sha256']}`"
            if line not in lines:
                lines.append(line)
    return lines


def figure_lines(path: Path | None) -> list[str]:
    if path is None:
        return ["(no `docemb evaluate` figures given)"]
    summary = json.loads(path.read_text())["summary"]
    names = list(next(iter(summary.values())))
    lines = ["| model, eval set | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {key} | " + " | ".join(f"{values[n]:.3f}" for n in names) + " |" for key, values in summary.items()]
    return [f"Recall@1 on simulated captures (`docemb evaluate`, {path.name}):", "", *lines]


def _whitening_lines(metadata: dict) -> list[str]:
    w = metadata["whitening"]
    return [
        f"- whitening (docemb.whitening) fitted after training on {w['images']} training images and a training-augmented "
        f"capture of each, from {', '.join(w['reference'])}; shrink {w['shrink']}",
    ]


def measure_held_out(run_dir: Path, eval_data: list[str]) -> None:
    """Evaluate a run that trained away from its held-out sets (a lent GPU: the data bundle
    leaves them behind) as its last epoch would have, and write the figures, the threshold
    table and its plots into the run folder, so the released weights carry measured thresholds."""
    from docemb.model import load_model
    from docemb.train.config import TrainConfig
    from docemb.train.loop import MODEL_FILE, evaluate_model, held_out_set, write_evaluation

    config = TrainConfig(**yaml.safe_load((run_dir / "config.yaml").read_text()))
    model = load_model(run_dir / MODEL_FILE)
    sets = [held_out_set(config, path, model) for path in eval_data]
    metrics, embeddings = evaluate_model(model, sets)
    report = json.loads((run_dir / "report.json").read_text())
    report.update(trained=metrics, thresholds=write_evaluation(sets, embeddings, run_dir / "plots"), eval_data=eval_data)
    write_json(run_dir / "report.json", report)


def model_card(
    run_dir: Path, weights: Path, figures: Path | None, weights_metadata: dict | None = None, recipe: str = RECIPE
) -> str:
    weights_metadata = weights_metadata or {}
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    report = json.loads((run_dir / "report.json").read_text())
    data = json.loads((run_dir / "data_report.json").read_text())
    lines = [
        f"# {weights.name}",
        "",
        f"docemb embedder: timm `{config['arch']}` backbone, {config['input_size']}x{config['input_size']} RGB in, "
        f"{config['embedding_dim']}-d L2-normalised out. Load with `docemb.model.load_model`; export with "
        f"`docemb export --ckpt {weights}`; fine-tune on your own templates with `docemb train --init {weights} ...`.",
        "",
        "## How it was made",
        f"- recipe: `{recipe}`",
        f"- initialisation: {config.get('init') or config.get('pretrained') or 'random'}",
        f"- commit {report.get('commit') or code_commit() + ' (at release)'}; {report['epochs']} epochs; last session {report['train_seconds_this_session'] / 60:.0f} min "
        f"at {report['images_per_s']:.0f} images/s on {report['device']} ({report['cpu_count']} cores, {report['threads']} threads, "
        f"{platform.processor() or platform.machine()})",
        *([f"- stored as {weights_metadata['stored_as']}"] if "stored_as" in weights_metadata else []),
        f"- {data['classes']} classes from {sum(s['images'] for s in data['sources'])} images:",
        *[f"  - {s['kind']} `{s['path']}`: {s['images']} images, weight {s['weight']}" for s in data["sources"]],
        *[f"- corpus {line}" for line in _corpus_manifests(config)],
        "- never trained on: Debian texlive-latex-recommended-doc, texlive-science-doc, texlive-publishers-doc, lilypond-doc-pdf, "
        "npm flag-icons, realdocs/eval (docemb corpus refuses them by name)",
        *(_whitening_lines(weights_metadata) if weights_metadata.get("whitening") else []),
        "",
        "## Figures",
        *figure_lines(figures),
        "",
        "Held-out metrics at the end of training (strength " + str(config.get("eval_strength", "medium")) + "):",
        "",
        *[f"- {key}: {value:.3f}" for key, value in report["trained"].items()],
        "",
        "## Config",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).strip(),
        "```",
    ]
    return "\n".join(lines) + "\n"


def stored(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Kernels and matrices in `dtype`; vectors stay float32 (BatchNorm variances reach 1e-8,
    below float16's normal range, and vectors are a few kB of the file)."""
    return tensor.to(dtype) if tensor.is_floating_point() and tensor.dim() >= 2 else tensor


def release(
    run_dir: Path,
    weights: Path,
    figures: Path | None = None,
    model: Path | None = None,
    recipe: str = RECIPE,
    storage: str = "float16",
) -> Path:
    """Write the run's model (or `model`, such as its whitened copy) to `weights` with its match
    thresholds inside (export puts them in every contract; the run folder does not travel with
    the weights), and the card beside it. float16 storage halves the file that a clone carries."""
    model = model or run_dir / "model.safetensors"
    for needed in (model, run_dir / "config.yaml", run_dir / "report.json", run_dir / "data_report.json"):
        if not needed.is_file():
            raise DocembError(f"{needed}: missing; release a finished training run")
    metadata = read_model_metadata(model)
    if "thresholds" not in metadata:  # a whitened model carries its own, measured after whitening
        metadata["thresholds"] = threshold_table(run_dir, prefer="realdocs/eval")
    metadata["released_from"] = metadata.pop("run", None)
    if storage not in STORAGE:
        raise DocembError(f"storage {storage!r}: choose one of {', '.join(STORAGE)}")
    metadata["stored_as"] = f"{storage} kernels and matrices, float32 vectors (loaded as float32)"
    with safe_open(str(model), framework="pt") as handle:
        state = {key: stored(handle.get_tensor(key), STORAGE[storage]) for key in handle.keys()}
    with atomic_path(weights) as tmp:
        save_file(state, tmp, metadata={key: json.dumps(value) for key, value in metadata.items()})
    card = weights.with_suffix(".md")
    write_text(card, model_card(run_dir, weights, figures, metadata, recipe))
    return card


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.train.release", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (its card goes beside it as .md)")
    parser.add_argument("--figures", type=Path, help="JSON written by `docemb evaluate --out`")
    parser.add_argument("--model", type=Path, help="the model file to release (default: the run's model.safetensors)")
    parser.add_argument("--recipe", default=RECIPE, help="the command that made the run, for the card")
    parser.add_argument(
        "--storage",
        choices=sorted(STORAGE),
        default="float16",
        help="dtype of kernels and matrices in the file (vectors: float32)",
    )
    parser.add_argument(
        "--eval-data",
        nargs="+",
        metavar="FOLDER",
        help="measure the held-out figures and thresholds first (a run trained without them)",
    )
    args = parser.parse_args()
    try:
        if args.eval_data:
            measure_held_out(args.run_dir, args.eval_data)
        print(f"wrote {args.out} and {release(args.run_dir, args.out, args.figures, args.model, args.recipe, args.storage)}")
    except DocembError as exc:
        raise SystemExit(f"release: error: {exc}") from None


if __name__ == "__main__":
    main()
