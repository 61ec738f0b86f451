"""The training loop: data -> model -> PartialFC margin loss, evaluated on held-out templates."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from docemb.atomic import atomic_path, write_json, write_text
from docemb.embedders import torch_embedder
from docemb.errors import DocembError
from docemb.evaluation import EvalSet, build_eval_set, embed_eval_set, retrieval_metrics
from docemb.model import EmbeddingModel, build_model, load_pretrained_backbone, save_model
from docemb.train.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from docemb.train.config import TrainConfig, to_yaml
from docemb.train.data import ClassBatchSampler, ExpandedTemplates, load_templates, seed_worker
from docemb.train.margins import build_margin
from docemb.train.partial_fc import PartialFC

MODEL_FILE = "model.safetensors"
GRAD_CLIP = 5.0


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Linear warm-up to the base rate, then cosine or polynomial (power 2) decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else (1 - progress) ** 2

    return factor


def evaluate(model: EmbeddingModel, eval_sets: list[EvalSet]) -> dict[str, float]:
    """Recall@1/@5 of distorted queries against their templates, per held-out set."""
    model.eval()
    embedder = torch_embedder(model)
    metrics = {}
    for eval_set in eval_sets:
        scores = retrieval_metrics(embed_eval_set(embedder, model.preprocessing, eval_set), eval_set.query_labels)
        metrics.update({f"{eval_set.name}/{k}": v for k, v in scores.items()})
    return metrics


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train per `config`; returns the path of the final model. Resumable after a kill."""
    run_dir = Path(config.out)
    if not resume and (run_dir / "checkpoints").exists():
        raise DocembError(f"{run_dir}: already holds a run; pass --resume {run_dir} to continue it, or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", to_yaml(config))
    _seed_everything(config.seed)

    source = load_templates(config.data, config.max_side, on_error="skip" if config.skip_bad_images else "raise")
    model_config = config.model_config()
    model = build_model(model_config, seed=config.seed)
    if config.pretrained:
        load_pretrained_backbone(model, config.pretrained)
    dataset = ExpandedTemplates(
        source.images, model.preprocessing, config.num_variants, work_size=config.work_size, seed=config.seed
    )
    if dataset.num_classes < config.batch_size // config.views_per_class:
        raise DocembError(
            f"{dataset.num_classes} classes do not fill one batch of {config.batch_size // config.views_per_class}: add templates or lower --batch-size"
        )
    eval_sets = [
        build_eval_set(folder, model.preprocessing, config.eval_queries, seed=config.seed) for folder in config.eval_data
    ]
    print(f"data: {source.report()} -> {dataset.num_classes} classes ({config.num_variants} per template)")
    for eval_set in eval_sets:
        print(f"eval: {eval_set.name}: {len(eval_set.templates)} templates, {len(eval_set.queries)} distorted queries")

    pfc = PartialFC(
        dataset.num_classes,
        model_config.embedding_dim,
        build_margin(config.margin, config.margin_s, config.margin_m),
        config.sample_rate,
    )
    optimizer = torch.optim.AdamW(
        [
            {"params": model.parameters(), "weight_decay": config.weight_decay},
            {"params": pfc.parameters(), "weight_decay": 0.0},  # centres are normalised; decay would only shrink their step
        ],
        lr=config.lr,
    )
    sampler = ClassBatchSampler(dataset.num_classes, config.batch_size, config.views_per_class)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup_steps, config.schedule))
    modules = {"model": model, "pfc": pfc}

    if resume:
        state = load_checkpoint(run_dir, modules, optimizer, scheduler)
        print(f"resumed {run_dir} after epoch {state.epoch}")
    else:
        state = TrainingState(epoch=0, step=0, history=[{"epoch": 0, **evaluate(model, eval_sets)}])
    started = time.perf_counter()
    samples = 0
    for epoch in range(state.epoch + 1, config.epochs + 1):
        model.train()
        pfc.train()
        if config.workers == 0 and dataset.pipeline is not None:
            dataset.pipeline.set_random_seed(config.seed * 1000 + epoch)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=config.workers, worker_init_fn=seed_worker)
        losses = []
        epoch_start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", unit="batch", dynamic_ncols=True)
        for images, labels in bar:
            loss = pfc(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*model.parameters(), *pfc.parameters()], GRAD_CLIP)
            optimizer.step()
            scheduler.step()
            state.step += 1
            losses.append(loss.item())
            samples += len(labels)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        seconds = time.perf_counter() - epoch_start
        row = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "images_per_s": len(losses) * config.batch_size / seconds,
            **evaluate(model, eval_sets),
        }
        state.history.append(row)
        state.epoch = epoch
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        save_model(
            run_dir / MODEL_FILE, model, metadata={"run": str(run_dir.resolve()), "epoch": epoch, "train_config": asdict(config)}
        )
        save_checkpoint(run_dir, modules, optimizer, scheduler, state)
        _write_history(run_dir / "metrics.csv", state.history)

    report = {
        "model": str(run_dir / MODEL_FILE),
        "untrained": {k: v for k, v in state.history[0].items() if "/" in k},
        "trained": {k: v for k, v in state.history[-1].items() if "/" in k},
        "epochs": config.epochs,
        "train_seconds_this_session": round(time.perf_counter() - started, 1),
        "images_per_s": round(samples / max(1e-9, time.perf_counter() - started), 1),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    write_json(run_dir / "report.json", report)
    _print_report(report)
    return run_dir / MODEL_FILE


def _print_report(report: dict) -> None:
    keys = sorted(report["trained"])
    if not keys:
        return
    width = max(len(k) for k in keys)
    print(f"\n{'held-out metric':<{width}}  untrained  trained")
    for key in keys:
        print(f"{key:<{width}}  {report['untrained'].get(key, float('nan')):9.3f}  {report['trained'][key]:7.3f}")
