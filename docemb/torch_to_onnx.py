"""PyTorch -> ONNX through the legacy TorchScript exporter at opset 17, for every ONNX file
docemb writes (the float model and the fine-tuned int8 graph).

The dynamo exporter always writes opset 18 and needs onnxscript; the opset-17 graph from the
legacy exporter is the one onnxruntime's quantization tools and onnx2tf handle best.
"""

from __future__ import annotations

import os
import warnings

import torch

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"


def export_legacy(
    module: torch.nn.Module,
    sample: torch.Tensor,
    path: str | os.PathLike,
    io_names: tuple[str, str] = (INPUT_NAME, OUTPUT_NAME),
) -> None:
    """`module` traced at `sample` into `path`, its input and output named `io_names`, the batch
    dimension free, constants folded."""
    input_name, output_name = io_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
