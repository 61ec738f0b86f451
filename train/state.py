"""What a training run holds while it trains: built by `loop.build_run`, passed to each epoch,
to evaluation and to the checkpoint functions."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from docemb.evaluation import Embeddings, EvalSet
    from docemb.model import EmbeddingModel
    from docemb.train.config import TrainConfig
    from docemb.train.data import ClassBatchSampler, ExpandedTemplates
    from docemb.train.distributed import Runtime
    from docemb.train.partial_fc import PartialFC
    from docemb.train.sources import TemplatePool
    from docemb.train.teacher import DistillationLoss


def code_commit() -> str:
    """The checkout's commit (short), for reports and cards; "unknown" outside git."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    except OSError:  # no git on the machine (a lent GPU runs from a bundle)
        return "unknown"
    return result.stdout.strip() or "unknown"


@dataclass
class TrainingState:
    epoch: int  # last completed (and evaluated) epoch, 1-based
    step: int  # optimizer steps taken; beyond epoch * steps_per_epoch in a mid-epoch checkpoint
    history: list[dict]


@dataclass
class Run:
    config: TrainConfig
    runtime: Runtime
    folder: Path
    pool: TemplatePool
    dataset: ExpandedTemplates
    model: EmbeddingModel
    trained_model: torch.nn.Module  # the model, or DistributedDataParallel around it
    pfc: PartialFC
    distill: DistillationLoss | None
    teacher_targets: torch.Tensor | None  # teacher features per class, with distill
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: ClassBatchSampler
    eval_sets: list[EvalSet]
    autocast_dtype: torch.dtype | None
    memory_format: torch.memory_format
    state: TrainingState = field(default_factory=lambda: TrainingState(0, 0, []))
    writer: object | None = None  # TensorBoard's SummaryWriter on rank 0, when enabled
    started: float = field(default_factory=time.perf_counter)
    commit: str = field(default_factory=code_commit)  # of the code this session trains with
    samples: int = 0  # images trained on in this session, over all ranks
    final_embeddings: list[Embeddings] | None = None  # of the last epoch evaluated

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        """Everything with weights a checkpoint keeps, by name."""
        return {"model": self.model, "pfc": self.pfc, **({"distill": self.distill} if self.distill else {})}

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    @property
    def device(self) -> torch.device:
        return self.runtime.device
