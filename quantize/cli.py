"""`docemb quantize --model model.onnx|model.tflite --calib DIR [--include dynamic static full]`."""

from __future__ import annotations

import argparse

from docemb.options import add_dataclass_arguments, resolved_values
from docemb.quantize.run import QuantizeOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of quantize options (a run's FLOAT.quantize.yaml; flags override it)")
    add_dataclass_arguments(parser, QuantizeOptions)


def run(args: argparse.Namespace) -> None:
    from docemb.quantize.run import quantize

    options = QuantizeOptions(**resolved_values(QuantizeOptions, args, args.config))
    for written in quantize(options):
        record = written.record
        line = f"wrote {written.path} ({written.size_bytes / 1e6:.2f} MB, {record.graph}"
        if record.drift:
            line += f", cos to float mean {record.drift['cos_mean']:.4f} min {record.drift['cos_min']:.4f}"
        if record.qat:
            line += ", fine-tuned" if record.qat.kept else ", post-training (fine-tune gave no gain)"
        print(line + ")")
