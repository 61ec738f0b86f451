"""The training loop: data -> model -> PartialFC margin loss, evaluated on held-out templates."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from docemb import plots
from docemb.atomic import atomic_path, write_json, write_text
from docemb.embedders import torch_embedder
from docemb.errors import DocembError
from docemb.evaluation import (
    Embeddings,
    EvalSet,
    build_eval_set,
    embed_eval_set,
    pair_scores,
    retrieval_metrics,
    tpr_at_fpr,
    verification_metrics,
)
from docemb.lock import output_lock
from docemb.model import (
    EmbeddingModel,
    ModelConfig,
    build_model,
    load_model,
    load_pretrained_backbone,
    narrowed_model,
    save_model,
)
from docemb.options import to_yaml
from docemb.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from docemb.train.config import TrainConfig
from docemb.train.data import ClassBatchSampler, ExpandedTemplates
from docemb.train.distributed import Runtime, barrier, computed_on_main, main_rank_first, setup
from docemb.train.margins import build_margin
from docemb.train.partial_fc import PartialFC
from docemb.train.sources import Source, SourceSpec, TemplatePool, load_source
from docemb.train.spread import spread_centres
from docemb.train.state import Run, TrainingState
from docemb.train.teacher import DistillationLoss, build_teacher, teacher_features

MODEL_FILE = "model.safetensors"


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Linear warm-up to the base rate, then cosine or polynomial (power 2) decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else (1 - progress) ** 2

    return factor


def evaluate_model(model: EmbeddingModel, eval_sets: list[EvalSet]) -> tuple[dict[str, float], list[Embeddings]]:
    """Recall@1/@5 of distorted queries against their templates, AUROC and TPR@FPR of all
    query-template pairs, per held-out set; and the embeddings they came from."""
    model.eval()
    embedder = torch_embedder(model)
    metrics, all_embeddings = {}, []
    for eval_set in eval_sets:
        embeddings = embed_eval_set(embedder, model.preprocessing, eval_set)
        scores = {
            **retrieval_metrics(embeddings, eval_set.query_labels),
            **verification_metrics(embeddings, eval_set.query_labels),
        }
        metrics.update({f"{eval_set.name}/{k}": v for k, v in scores.items()})
        all_embeddings.append(embeddings)
    return metrics, all_embeddings


def write_evaluation(eval_sets: list[EvalSet], embeddings: list[Embeddings], folder: Path) -> dict[str, list[dict]]:
    """The threshold table (TPR and threshold at each FPR) per set, with ROC, score-histogram and
    retrieval-grid PNGs in `folder`."""
    tables = {}
    for eval_set, embedded in zip(eval_sets, embeddings):
        positives, negatives = pair_scores(embedded, eval_set.query_labels)
        tables[eval_set.name] = tpr_at_fpr(positives, negatives)
        stem = eval_set.name.replace("/", "_")
        plots.roc_curve({eval_set.name: (positives, negatives)}, folder / f"{stem}_roc.png")
        plots.score_histograms(positives, negatives, folder / f"{stem}_scores.png", title=eval_set.name)
        plots.retrieval_grid(eval_set, embedded.queries, embedded.templates, folder / f"{stem}_retrieval.png")
    return tables


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


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "none" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra; metrics.csv is always written
        print("tensorboard is not installed: logging to metrics.csv only")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train per `config`; returns the path of the final model. Resumable after a kill.

    Runs as one process, or as one rank of `torchrun`: the backbone is replicated (DDP), the
    PartialFC centres are sharded, rank 0 evaluates and writes the run folder.
    """
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 holds the folder
    with output_lock(config.out) if main_rank else contextlib.nullcontext():
        run = build_run(config, resume)
        for epoch in range(run.state.epoch + 1, config.epochs + 1):
            row = train_one_epoch(run, epoch)
            metrics, run.final_embeddings = evaluate(run)
            end_epoch(run, {**row, **metrics})
        return finish(run)


def build_run(config: TrainConfig, resume: bool = False) -> Run:
    """Data, model, heads, optimizer and schedule of a run, restored from its last checkpoint
    with `resume`, else evaluated untrained (the history's first row)."""
    runtime = setup(config.device)
    folder = _start_folder(config, runtime.is_main, resume)
    _seed_everything(config.seed)
    pool = TemplatePool(_load_sources(config, folder, runtime.is_main))
    model = _initial_model(config, config.model_config())
    dataset = _dataset(config, pool, runtime, model)
    eval_sets = [held_out_set(config, path, model) for path in config.eval_data] if runtime.is_main else []
    if runtime.is_main:
        _print_data(config, folder, pool, dataset, eval_sets, runtime)
    pfc, distill, teacher_targets = _heads(config, pool, dataset, folder, runtime.is_main)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    for module in (model, pfc, *([distill] if distill else [])):
        module.to(runtime.device)
    model.to(memory_format=memory_format)
    optimizer = _optimizer(config, model, pfc, distill)
    sampler = ClassBatchSampler(
        dataset.num_classes,
        config.batch_size,
        config.views_per_class,
        runtime.rank,
        runtime.world_size,
        class_weights=np.repeat(pool.image_weights(), config.num_variants),
        seed=config.seed,
        draws=None if config.steps_per_epoch is None else config.steps_per_epoch * sampled_classes_per_step(config, runtime),
    )
    warmup_steps = max(1, int(config.warmup_epochs * len(sampler)))
    schedule = lr_lambda(len(sampler) * config.epochs, warmup_steps, config.schedule)
    autocast_dtype = _autocast_dtype(config.amp, runtime.device)
    run = Run(
        config,
        runtime,
        folder,
        pool,
        dataset,
        model,
        DistributedDataParallel(model) if runtime.world_size > 1 else model,
        pfc,
        distill,
        teacher_targets,
        optimizer,
        torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        torch.amp.GradScaler(runtime.device.type, enabled=autocast_dtype == torch.float16),
        sampler,
        eval_sets,
        autocast_dtype,
        memory_format,
    )
    _restore_or_start(run, resume)
    run.writer = _tensorboard(folder, config.tensorboard) if runtime.is_main else None
    return run


def _start_folder(config: TrainConfig, is_main: bool, resume: bool) -> Path:
    folder = Path(config.out)
    if not resume and has_checkpoint(folder):
        raise DocembError(f"{folder}: already holds a run; pass --resume {folder} to continue it, or choose another --out")
    barrier()  # every rank checked before rank 0 creates the folder
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "config.yaml", to_yaml(config))
    return folder


def sampled_classes_per_step(config: TrainConfig, runtime: Runtime) -> int:
    """Classes one optimiser step draws over all ranks (each class as views_per_class views)."""
    return config.batch_size // config.views_per_class * runtime.world_size


def _dataset(config: TrainConfig, pool: TemplatePool, runtime: Runtime, model: EmbeddingModel) -> ExpandedTemplates:
    dataset = ExpandedTemplates(
        pool,
        model.preprocessing,
        config.num_variants,
        augment=config.augment,
        work_size=config.work_size,
        seed=config.seed,
        clean_share=config.clean_share,
    )
    classes_per_step = sampled_classes_per_step(config, runtime)
    if dataset.num_classes < classes_per_step:
        raise DocembError(
            f"{dataset.num_classes} classes do not fill one step of {classes_per_step}: add templates or lower --batch-size"
        )
    return dataset


def held_out_set(config: TrainConfig, path: str, model: EmbeddingModel) -> EvalSet:
    """The held-out captures of `path` that the run's figures and thresholds are measured on."""
    return build_eval_set(
        os.path.expanduser(path), model.preprocessing, config.eval_queries, config.eval_strength, seed=config.seed
    )


def _print_data(
    config: TrainConfig, folder: Path, pool: TemplatePool, dataset: ExpandedTemplates, eval_sets: list[EvalSet], runtime: Runtime
) -> None:
    """The data report (printed and saved as data_report.json) and the eval sets."""
    table, rows = pool.report(config.num_variants)
    write_json(folder / "data_report.json", {"sources": rows, "classes": dataset.num_classes})
    print(f"data: {len(pool)} images -> {dataset.num_classes} classes ({config.num_variants} per image)\n{table}")
    for eval_set in eval_sets:
        print(f"eval: {eval_set.name}: {len(eval_set.templates)} templates, {len(eval_set.queries)} distorted queries")
    print(f"device: {runtime.device}, {runtime.world_size} process(es), {torch.get_num_threads()} thread(s) each")


def _heads(
    config: TrainConfig, pool: TemplatePool, dataset: ExpandedTemplates, folder: Path, is_main: bool
) -> tuple[PartialFC, DistillationLoss | None, torch.Tensor | None]:
    """PartialFC over every class, and the distillation head with its teacher's targets; with
    `teacher_loss: centres` no head: the teacher's features are PartialFC's fixed centres."""
    dim = config.embedding_dim
    margin = build_margin(config.margin, config.margin_s, config.margin_m)
    pfc = PartialFC(
        dataset.num_classes,
        dim,
        margin,
        config.sample_rate,
        imprint=config.imprint_centres,
        imprint_momentum=config.imprint_momentum,
        sparse_update=config.centre_lr is not None,
    )
    if not config.teacher:
        return pfc, None, None
    targets = _teacher_targets(config, pool, folder, is_main)
    if config.teacher_loss == "centres":
        try:
            pfc.check_centres(targets)
        except ValueError as exc:
            raise DocembError(f"{config.teacher_weights}: its features cannot be the centres ({exc})") from None
        if config.centre_cap is not None:
            targets = _spread(targets, config.centre_cap, is_main)
        pfc.fix_centres(targets)
        return pfc, None, None
    distill = DistillationLoss(dim, targets.shape[1], config.teacher_temperature, config.teacher_weight)
    return pfc, distill, targets


def _spread(centres: torch.Tensor, cap: float, is_main: bool) -> torch.Tensor:
    """`spread_centres` on rank 0, its result sent to every rank (a minute of work on a large pool)."""
    centres, spread = computed_on_main(lambda: spread_centres(centres, cap), is_main)
    if is_main:
        print(
            f"centres: {spread.groups} images after joining duplicates; {spread.pairs} pairs above cosine "
            f"{cap} pushed apart, {spread.left} left above it"
        )
    return centres


def _optimizer(
    config: TrainConfig, model: EmbeddingModel, pfc: PartialFC, distill: DistillationLoss | None
) -> torch.optim.Optimizer:
    head_params = [p for p in (*pfc.parameters(), *(distill.parameters() if distill else [])) if p.requires_grad]
    groups = [
        {"params": model.parameters(), "weight_decay": config.weight_decay},
        {"params": head_params, "weight_decay": 0.0},  # centres are normalised; decay would only shrink their step
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def _restore_or_start(run: Run, resume: bool) -> None:
    if resume and has_checkpoint(run.folder):
        run.state = load_checkpoint(run)
        if run.runtime.is_main:
            step = run.state.step
            print(f"resumed {run.folder} at step {step} (epoch {run.state.epoch + 1}, batch {step % run.steps_per_epoch})")
        return
    if resume and run.runtime.is_main:
        print(f"{run.folder}: no finished checkpoint to resume from (killed before its first); starting afresh")
    run.state = TrainingState(epoch=0, step=0, history=[{"epoch": 0, **evaluate(run)[0]}])


def train_one_epoch(run: Run, epoch: int) -> dict[str, float]:
    """One pass of the sampler (the rest of it after a mid-epoch resume); returns the epoch's
    loss, images/s and the share of time spent waiting for data."""
    config, steps_per_epoch = run.config, run.steps_per_epoch
    for module in run.modules.values():
        module.train()
    done = run.state.step - (epoch - 1) * steps_per_epoch  # batches of this epoch run before a resume
    run.sampler.set_epoch(epoch, skip=done)
    # own generator: creating the loader must not draw from the global RNG that a
    # checkpoint restores, or a resumed run would sample different PartialFC centres
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        run.dataset,
        batch_sampler=run.sampler,
        num_workers=config.workers,
        generator=generator,
        pin_memory=run.device.type == "cuda",
    )
    losses = []
    epoch_start = waited = time.perf_counter()
    data_seconds = 0.0  # time the step waited for its batch: augmentation not hidden by the workers
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        initial=done,
        total=steps_per_epoch,
        dynamic_ncols=True,
        disable=not run.runtime.is_main,
    )
    for images, labels in bar:
        data_seconds += time.perf_counter() - waited
        losses.append(train_step(run, images, labels))
        lr = run.scheduler.get_last_lr()[0]
        bar.set_postfix(loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}", data=f"{data_seconds / len(losses):.2f}s")
        if config.checkpoint_every and run.state.step % config.checkpoint_every == 0 and run.state.step % steps_per_epoch:
            save_checkpoint(run)  # mid-epoch; the epoch's end writes its own after evaluation
        waited = time.perf_counter()
    seconds = max(time.perf_counter() - epoch_start, 1e-9)
    images = len(losses) * config.batch_size * run.runtime.world_size
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)),
        "images_per_s": images / seconds,
        "data_wait_share": data_seconds / seconds,
    }


def train_step(run: Run, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Forward, margin (and distillation) loss, backward, optimizer and centre steps; the loss."""
    config, device, scaler, scheduler = run.config, run.device, run.scaler, run.scheduler
    images = images.to(device, non_blocking=True, memory_format=run.memory_format)
    labels = labels.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=run.autocast_dtype, enabled=run.autocast_dtype is not None):
        embeddings = run.trained_model(images)
    loss = run.pfc(embeddings, labels)
    terms = {"margin": loss.item()}
    if run.distill is not None:
        kd = run.distill(embeddings, run.teacher_targets[labels.cpu()].to(device))
        terms["distill"] = kd.item()
        loss = loss + kd
    run.optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(run.optimizer)
    torch.nn.utils.clip_grad_norm_([p for m in run.modules.values() for p in m.parameters()], config.grad_clip)
    scaler.step(run.optimizer)
    if config.centre_lr is not None:
        centre_lr = config.centre_lr * scheduler.get_last_lr()[0] / config.lr  # on the same schedule
        run.pfc.step_centres(centre_lr / (scaler.get_scale() if scaler.is_enabled() else 1.0))  # fp16: rows' grads are scaled
    scaler.update()
    scheduler.step()
    run.state.step += 1
    run.samples += len(labels) * run.runtime.world_size
    if run.writer is not None:
        run.writer.add_scalar("train/loss", loss.item(), run.state.step)
        run.writer.add_scalars("train/terms", terms, run.state.step)
        run.writer.add_scalar("train/lr", scheduler.get_last_lr()[0], run.state.step)
    return loss.item()


def evaluate(run: Run) -> tuple[dict[str, float], list[Embeddings]]:
    """The run's model on its held-out sets (empty on ranks other than 0)."""
    return evaluate_model(run.model, run.eval_sets)


def end_epoch(run: Run, row: dict) -> None:
    """Log the epoch's row (metrics.csv, TensorBoard, the terminal), save the model and a checkpoint."""
    run.state.history.append(row)
    run.state.epoch = row["epoch"]
    if run.runtime.is_main:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if run.writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    run.writer.add_scalar(f"epoch/{key}", value, row["epoch"])
            run.writer.flush()
        metadata = {"run": str(run.folder.resolve()), "epoch": row["epoch"], "train_config": asdict(run.config)}
        save_model(run.folder / MODEL_FILE, run.model, metadata=metadata)
        _write_history(run.folder / "metrics.csv", run.state.history)
    save_checkpoint(run)


def finish(run: Run) -> Path:
    """The report (held-out figures before and after, the threshold table, plots); the model's path."""
    if run.writer is not None:
        run.writer.close()
    if run.runtime.is_main:
        if run.final_embeddings is None:  # resumed after the last epoch: nothing was evaluated this session
            run.final_embeddings = evaluate(run)[1]
        elapsed = max(1e-9, time.perf_counter() - run.started)
        report = {
            "model": str(run.folder / MODEL_FILE),
            "untrained": {k: v for k, v in run.state.history[0].items() if "/" in k},
            "trained": {k: v for k, v in run.state.history[-1].items() if "/" in k},
            "epochs": run.config.epochs,
            "train_seconds_this_session": round(elapsed, 1),
            "commit": run.commit,
            "images_per_s": round(run.samples / elapsed, 1),
            "device": str(run.device),
            "world_size": run.runtime.world_size,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "thresholds": write_evaluation(run.eval_sets, run.final_embeddings, run.folder / "plots"),
        }
        write_json(run.folder / "report.json", report)
        _print_report(report)
    barrier()
    return run.folder / MODEL_FILE


def _initial_model(config: TrainConfig, model_config: ModelConfig) -> EmbeddingModel:
    """Random weights, a pretrained backbone (--pretrained), or a whole docemb model (--init)."""
    if config.init:
        model = load_model(config.init)
        registered = {"template_frame": model_config.template_frame, "template_views": model_config.template_views}
        if replace(model.config, **registered, arch=model_config.arch) != model_config:
            raise DocembError(f"{config.init}: its model {model.config} differs from this run's {model_config}")
        if model.config.arch != model_config.arch:
            print(f"init: {config.init}'s {model.config.arch} weights narrowed to {model_config.arch} (weight selection)")
            return narrowed_model(model, model_config, config.init).train()
        model.config = model_config  # the same weights; templates may be registered anew
        return model.train()
    model = build_model(model_config, seed=config.seed)
    if config.pretrained:
        load_pretrained_backbone(model, config.pretrained)
    return model


def _load_sources(config: TrainConfig, run_dir: Path, is_main: bool) -> list[Source]:
    on_error = "skip" if config.skip_bad_images else "raise"
    cache = run_dir.parent / ".data_cache"
    return main_rank_first(
        lambda: [load_source(SourceSpec.parse(text), config.max_side, on_error, cache, config.seed) for text in config.data],
        is_main,
    )


def _teacher_targets(config: TrainConfig, images: Sequence[np.ndarray], run_dir: Path, is_main: bool) -> torch.Tensor:
    """Teacher features for every class (rank 0 fills the cache that the other ranks read)."""
    teacher = build_teacher(config.teacher, config.teacher_model, config.teacher_weights, config.teacher_size)
    cache = Path(config.teacher_cache) if config.teacher_cache else run_dir.parent / ".teacher_cache"
    features = main_rank_first(lambda: teacher_features(teacher, images, config.num_variants, cache), is_main)
    if is_main:
        print(f"teacher: {teacher.name}, {features.shape[1]}-d features for {features.shape[0]} classes (cache: {cache})")
    return features


def _print_report(report: dict) -> None:
    keys = sorted(report["trained"])
    if not keys:
        return
    width = max(len(k) for k in keys)
    print(f"\n{'held-out metric':<{width}}  untrained  trained")
    for key in keys:
        print(f"{key:<{width}}  {report['untrained'].get(key, float('nan')):9.3f}  {report['trained'][key]:7.3f}")
    for name, rows in report["thresholds"].items():
        print(f"\n{name}: match threshold for each false-positive rate")
        print("    FPR  threshold    TPR")
        for row in rows:
            note = "" if row["measurable"] else "  (fewer than 1/FPR negative pairs: not measurable here)"
            print(f"{row['fpr']:7.0e}  {row['threshold']:9.4f}  {row['tpr']:5.3f}{note}")
    if report["thresholds"]:
        print(f"\nplots (ROC, score histograms, retrieval grids): {Path(report['model']).parent / 'plots'}")
