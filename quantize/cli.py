"""`docemb quantize --model model.onnx --calib DIR [--include dynamic static]`."""

from __future__ import annotations

import argparse
from pathlib import Path

KINDS = ("dynamic", "static")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="float ONNX model written by `docemb export` (its contract must sit beside it)"
    )
    parser.add_argument(
        "--calib",
        nargs="+",
        help="image folder(s) to calibrate on: the training data or real images like the ones users match (required for static)",
    )
    parser.add_argument("--out", help="output folder (default: the model's folder)")
    parser.add_argument(
        "--include", nargs="+", default=list(KINDS), choices=KINDS, help="which int8 models to write (default: both)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["minmax", "entropy", "percentile"],
        help="calibration methods to compare for static (default: all three)",
    )
    parser.add_argument("--calib-count", type=int, default=128, help="calibration images (default: 128)")


def run(args: argparse.Namespace) -> None:
    from docemb.atomic import write_json
    from docemb.contract import check_contract, describe_onnx, write_contract
    from docemb.errors import DocembError
    from docemb.preprocess import Preprocessing
    from docemb.quantize.calibration import calibration_inputs
    from docemb.quantize.ort import METHODS, pick_static_method, quantize_dynamic_int8

    float_path = Path(args.model)
    if not float_path.is_file():
        raise DocembError(f"{float_path}: model not found")
    contract = check_contract(float_path)
    preprocessing = Preprocessing.from_dict(contract["preprocessing"])
    out = Path(args.out) if args.out else float_path.parent
    stem = float_path.stem
    source = {
        "float_model": float_path.name,
        "float_sha256": contract["sha256"],
        "checkpoint": contract["source"].get("checkpoint"),
    }
    report: dict = {"float_model": str(float_path)}

    if "dynamic" in args.include:
        path = quantize_dynamic_int8(float_path, out / f"{stem}_int8_dynamic.onnx")
        write_contract(
            path,
            preprocessing,
            describe_onnx(path),
            source,
            {"scheme": "onnxruntime dynamic int8", "weights": "int8 per-channel", "activations": "quantized at run time"},
        )
        report["dynamic"] = {"file": path.name, "size_bytes": path.stat().st_size}
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")

    if "static" in args.include:
        if not args.calib:
            raise DocembError("static quantization needs --calib FOLDER (images like the ones the model will see)")
        unknown = set(args.methods) - set(METHODS)
        if unknown:
            raise DocembError(f"unknown calibration method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
        calibration = calibration_inputs(args.calib, preprocessing, args.calib_count, offset=0)
        validation = calibration_inputs(args.calib, preprocessing, args.calib_count, offset=1, seed=1)
        path = out / f"{stem}_int8_static.onnx"
        best, results = pick_static_method(float_path, path, calibration, validation, tuple(args.methods))
        print(f"static QDQ calibration on {len(calibration)} images, drift on {len(validation)} others:")
        for method, drift in results.items():
            marker = "  <- kept" if method == best else ""
            print(f"  {method:<10} cos mean {drift['cos_mean']:.4f}  min {drift['cos_min']:.4f}{marker}")
        quantization = {
            "scheme": "onnxruntime static QDQ int8",
            "weights": "int8 symmetric per-channel",
            "activations": "uint8 asymmetric per-tensor",
            "calibration": {
                "method": best,
                "images": len(calibration),
                "folders": [str(f) for f in args.calib],
                "compared": results,
            },
        }
        write_contract(path, preprocessing, describe_onnx(path), source, quantization)
        report["static"] = {"file": path.name, "size_bytes": path.stat().st_size, "method": best, "compared": results}
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    write_json(out / f"{stem}_quantize_report.json", report)
