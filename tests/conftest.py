"""Shared fixtures: small generated documents and a tiny model, all made here (no downloads)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import docemb.torchvision_fix  # noqa: F401

# isort: split
import timm

from docemb.model import ModelConfig, build_model
from docemb.synth import generate


@pytest.fixture(scope="session")
def synth_train(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_train")
    generate(out, n=8, seed=0, long_side=160)
    return out


@pytest.fixture(scope="session")
def synth_eval(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_eval")
    generate(out, n=6, seed=1, long_side=160)
    return out


@pytest.fixture(scope="session")
def small_config() -> ModelConfig:
    return ModelConfig(arch="lcnet_050", input_size=64, embedding_dim=32, squeeze_channels=16)


@pytest.fixture()
def small_model(small_config):
    torch.manual_seed(0)
    model = build_model(small_config, seed=0)
    # give BatchNorm real statistics so that eval-mode outputs are well spread
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, small_config.input_size, small_config.input_size))
    return model.eval()


TINY_TEACHER = "mobilenetv3_small_050"


@pytest.fixture(scope="session")
def tiny_config(synth_train, synth_eval):
    """A factory of training configs small enough for a test: 64 px, 32-d, on the generated documents."""
    from docemb.train.config import TrainConfig

    def make(out: Path, epochs: int = 2) -> TrainConfig:
        return TrainConfig(
            data=[str(synth_train)],
            eval_data=[str(synth_eval)],
            out=str(out),
            epochs=epochs,
            batch_size=32,
            input_size=64,
            embedding_dim=32,
            squeeze_channels=16,
            max_side=96,
            work_size=72,
            workers=0,
            warmup_epochs=0.5,
            eval_queries=1,
        )

    return make


@pytest.fixture(scope="session")
def tiny_teacher() -> str:
    """The timm architecture of the test teacher (tiny_teacher_weights holds its weights)."""
    return TINY_TEACHER


@pytest.fixture(scope="session")
def trained_model(tiny_config, tmp_path_factory):
    """A small model trained for a few epochs on generated documents: int8 drift depends on
    trained weights and activation ranges, which a random model does not have."""
    from docemb.model import load_model
    from docemb.train.loop import train

    out = tmp_path_factory.mktemp("trained")
    # the mild photo pipeline and centres in the optimizer, as the int8 tests' bounds were set on
    # (int8 drift on so small a model also moves with the CPU that trained it)
    config = tiny_config(out, epochs=3)
    train(dataclasses.replace(config, augment="photo", centre_lr=None))
    return load_model(out / "model.safetensors")


@pytest.fixture()
def tiny_teacher_weights(tmp_path) -> Path:
    """A local weights file for a small timm model, as a user's teacher file would be."""
    torch.manual_seed(0)
    model = timm.create_model(TINY_TEACHER, pretrained=False, num_classes=0)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture()
def free_port() -> int:
    """A TCP port nobody listens on now, for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
