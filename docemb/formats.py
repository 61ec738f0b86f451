"""The one table of model formats: which stage writes each, the word that asks for it, its file
name, the runtime that runs it and what its contract says about the input.

export, quantize, bench, the Makefile (`docemb formats --files`) and the tests read names from
here, so a file name is spelled in one place.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from docemb.errors import DocembError

Stage = Literal["export", "quantize"]
# How the graph computes; bench keys on it (per-layer drift needs onnxruntime's own QDQ file,
# whose tensors keep the float file's names).
GraphKind = Literal["float32", "float16", "ort-dynamic", "ort-qdq", "pt2e-qdq", "litert-dynamic", "litert-static", "litert-full"]


@dataclass(frozen=True)
class Format:
    key: str
    stage: Stage
    include: str  # the stage's --include word
    suffix: str  # ".onnx" or ".tflite"
    tag: str  # between the stem and the suffix: model{tag}.onnx
    runtime: str
    graph: GraphKind
    contract_input: str  # what the contract says the input is

    def file_name(self, stem: str = "model") -> str:
        return f"{stem}{self.tag}{self.suffix}"

    def path(self, folder: str | Path, stem: str = "model") -> Path:
        return Path(folder) / self.file_name(stem)


FORMATS: tuple[Format, ...] = (
    Format("onnx", "export", "onnx", ".onnx", "", "onnxruntime", "float32", "float32 NCHW, normalised"),
    Format(
        "onnx-int8-dynamic",
        "quantize",
        "dynamic",
        ".onnx",
        "_int8_dynamic",
        "onnxruntime",
        "ort-dynamic",
        "float32 NCHW, normalised",
    ),
    Format(
        "onnx-int8-static", "quantize", "static", ".onnx", "_int8_static", "onnxruntime", "ort-qdq", "float32 NCHW, normalised"
    ),
    Format("tflite", "export", "tflite", ".tflite", "", "litert", "float32", "float32 NHWC, normalised"),
    Format("tflite-fp16", "export", "tflite-fp16", ".tflite", "_fp16", "litert", "float16", "float32 NHWC, normalised"),
    Format(
        "tflite-int8-dynamic",
        "quantize",
        "dynamic",
        ".tflite",
        "_int8_dynamic",
        "litert",
        "litert-dynamic",
        "float32 NHWC, normalised",
    ),
    Format(
        "tflite-int8-static",
        "quantize",
        "static",
        ".tflite",
        "_int8_static",
        "litert",
        "litert-static",
        "float32 NHWC, normalised",
    ),
    Format(
        "tflite-int8-full",
        "quantize",
        "full",
        ".tflite",
        "_int8_full",
        "litert",
        "litert-full",
        "int8 NHWC, scale and zero point",
    ),
)


def formats(stage: Stage | None = None, suffix: str | None = None) -> list[Format]:
    return [f for f in FORMATS if (stage is None or f.stage == stage) and (suffix is None or f.suffix == suffix)]


def includes(stage: Stage, suffix: str | None = None) -> list[str]:
    """The --include words of a stage (for one input suffix), in table order, without repeats."""
    return list(dict.fromkeys(f.include for f in formats(stage, suffix)))


def lookup(stage: Stage, suffix: str, include: str) -> Format:
    for fmt in formats(stage, suffix):
        if fmt.include == include:
            return fmt
    raise DocembError(f"no {suffix} format for `{include}` (choose from {', '.join(includes(stage, suffix))})")


def table() -> str:
    """The formats as a plain-text table."""
    header = ("format", "stage", "--include", "file", "runtime", "graph", "input")
    rows = [(f.key, f.stage, f.include, f.file_name(), f.runtime, f.graph, f.contract_input) for f in FORMATS]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in (header, *rows))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", action="store_true", help="print only the file names, one line (for make)")
    parser.add_argument("--stem", default="model", help="file stem (default: model)")
    parser.add_argument("--dir", default=None, help="prefix the file names with this folder")


def run(args: argparse.Namespace) -> None:
    if not args.files:
        print(table())
        return
    names = [f.file_name(args.stem) for f in FORMATS]
    print(" ".join(str(Path(args.dir) / n) if args.dir else n for n in names))
