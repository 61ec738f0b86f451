"""`docemb quantize --model model.onnx|model.tflite --calib DIR [--include dynamic static full]`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from docemb.quantize.qat import QatPlan, QatSettings

if TYPE_CHECKING:
    from docemb.layer_drift import LayerError
    from docemb.quantize.pt2e_sensitivity import LayerCost
    from docemb.quantize.sensitivity import DriftTarget, MixedPrecision

ONNX_KINDS = ("dynamic", "static")
# layer-by-layer errors keep every activation of two models in memory: a few MB per image, and
# TFLite's cost per layer runs the validation images once per layer
LAYER_ERROR_IMAGES = 128
# TFLite's static keeps a float front (docemb.edge_model); full is int8 from input to head
TFLITE_KINDS = ("dynamic", "static", "full")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="float .onnx or .tflite written by `docemb export` (its contract must sit beside it; .tflite quantizes from the checkpoint the contract names)",
    )
    parser.add_argument(
        "--calib",
        nargs="+",
        help="image folder(s) to calibrate on: the training data or real images like the ones users match (required for static)",
    )
    parser.add_argument("--out", help="output folder (default: the model's folder)")
    parser.add_argument(
        "--include",
        nargs="+",
        choices=TFLITE_KINDS,
        help="which int8 models to write: dynamic, static and, for TFLite, full (full integer, for NPUs and "
        "integer-only delegates); default: all of the model's format",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["minmax", "entropy", "percentile"],
        help="calibration methods to compare for static (default: all three)",
    )
    parser.add_argument("--calib-count", type=int, default=128, help="calibration images (default: 128)")
    parser.add_argument(
        "--validation-count",
        type=int,
        default=512,
        help="held-out images (other than the calibration ones) that drift is measured on (default: 512; "
        "a small set's worst case is optimistic)",
    )
    parser.add_argument(
        "--float-front",
        type=int,
        metavar="STRIDE",
        help="static TFLite and fine-tuned static ONNX: keep the stem and the blocks up to this output stride in float "
        "(input float32), which XNNPACK runs faster than int8 there and which adds the most int8 error (default: 8, docemb.edge_model)",
    )
    parser.add_argument(
        "--input-type",
        choices=("int8", "float32"),
        default="int8",
        help="full-integer TFLite input: int8 (the app quantizes, as the contract says) or float32 (a QUANTIZE op inside; default: int8)",
    )
    parser.add_argument(
        "--qat",
        choices=("auto", "always", "never"),
        default="auto",
        help="static int8 (ONNX and TFLite) and full TFLite: quantization-aware fine-tune towards the float model on the "
        "--calib images, kept when it drifts less; auto runs it where post-training int8 misses --drift-target (default: auto)",
    )
    parser.add_argument(
        "--qat-steps", type=int, default=QatSettings.steps, help=f"fine-tune steps of 32 images (default: {QatSettings.steps})"
    )
    parser.add_argument(
        "--qat-lr", type=float, default=QatSettings.lr, help=f"fine-tune learning rate (default: {QatSettings.lr:g})"
    )
    parser.add_argument(
        "--qat-images", type=int, default=1024, help="calibration-pool images the fine-tune draws from (default: 1024)"
    )
    parser.add_argument(
        "--drift-target",
        nargs=2,
        type=float,
        default=[0.99, 0.97],
        metavar=("MEAN", "MIN"),
        help="cosine to float that static int8 must keep on the validation images (default: 0.99 0.97)",
    )
    parser.add_argument(
        "--dynamic-target",
        type=float,
        default=0.998,
        metavar="MEAN",
        help="ONNX dynamic: layers go int8 largest first while the mean cosine to float on the validation images "
        "stays at or above this (default: 0.998)",
    )
    parser.add_argument(
        "--max-float-nodes",
        type=int,
        default=4,
        help="layers static int8 may keep in float to meet --drift-target (default: 4; 0 keeps everything int8)",
    )


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from docemb.atomic import write_json
    from docemb.contract import check_contract, describe_onnx, write_contract
    from docemb.errors import DocembError
    from docemb.layer_drift import layer_errors
    from docemb.preprocess import Preprocessing
    from docemb.quantize.ort import METHODS, pick_static_method, quantize_dynamic_int8
    from docemb.quantize.sensitivity import DriftTarget, mixed_precision

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
        **({"peer": contract["source"]["peer"]} if contract["source"].get("peer") else {}),
    }
    if float_path.suffix == ".tflite":
        args.include = args.include or list(TFLITE_KINDS)
    else:
        args.include = args.include or list(ONNX_KINDS)
        if "full" in args.include:
            raise DocembError(f"{float_path}: full is a TFLite kind; ONNX static is all int8 with --max-float-nodes 0")
    if {"static", "full"} & set(args.include) and not args.calib:
        raise DocembError("static quantization needs --calib FOLDER (images like the ones the model will see)")
    if float_path.suffix == ".tflite":
        _run_tflite(args, float_path, contract, preprocessing, out, source)
        return
    report: dict = {"float_model": str(float_path)}
    target = DriftTarget(*args.drift_target)
    calibration, validation = _calibration_sets(args, preprocessing) if args.calib else (None, None)

    if "dynamic" in args.include:
        path = out / f"{stem}_int8_dynamic.onnx"
        choice = quantize_dynamic_int8(float_path, path, validation, args.dynamic_target)
        quantization = {
            "scheme": "onnxruntime dynamic int8",
            "weights": "int8 per-channel",
            "activations": "quantized at run time",
            "int8_weight_share": choice.int8_weight_share,
            "float_nodes": choice.float_layers,
        }
        print(
            f"  dynamic: {len(choice.int8_layers)} of {len(choice.int8_layers) + len(choice.float_layers)} weighted layers "
            f"in int8, largest first ({choice.int8_weight_share:.1%} of their parameters)"
        )
        if choice.drift is not None:
            quantization |= {
                "drift": choice.drift,
                "drift_validation_images": len(validation),
                "drift_target": {"cos_mean": args.dynamic_target},
            }
            met = "met" if choice.target_met else "NOT met"
            print(
                f"  dynamic: cos to float mean {choice.drift['cos_mean']:.4f} min {choice.drift['cos_min']:.4f} "
                f"on {len(validation)} images (target mean {args.dynamic_target} {met})"
            )
        write_contract(path, preprocessing, describe_onnx(path), source, quantization, contract.get("thresholds"))
        report["dynamic"] = {"file": path.name, "size_bytes": path.stat().st_size, **quantization}
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")

    if "static" in args.include:
        unknown = set(args.methods) - set(METHODS)
        if unknown:
            raise DocembError(f"unknown calibration method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
        path = out / f"{stem}_int8_static.onnx"
        best, results = pick_static_method(float_path, path, calibration, validation, tuple(args.methods))
        print(f"static QDQ calibration on {len(calibration)} images, drift on {len(validation)} others:")
        for method, drift in results.items():
            marker = "  <- kept" if method == best else ""
            print(f"  {method:<10} cos mean {drift['cos_mean']:.4f}  min {drift['cos_min']:.4f}{marker}")
        errors = layer_errors(float_path, path, validation[:LAYER_ERROR_IMAGES])
        mixed = None
        if not target.met(results[best]) and args.max_float_nodes > 0:
            print(f"below the drift target (mean {target.cos_mean}, min {target.cos_min}): trying layers in float")
            mixed = mixed_precision(float_path, path, errors, calibration, validation, best, target, args.max_float_nodes)
        _print_sensitivity(errors, mixed)
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
            "drift_target": {"cos_mean": target.cos_mean, "cos_min": target.cos_min},
            "float_nodes": mixed.float_nodes if mixed else [],
            "drift": mixed.drift if mixed else results[best],
        }
        write_json(
            _beside(path, "layers"),
            {"layers": [asdict(e) for e in errors], "mixed_precision": asdict(mixed) if mixed else None},
        )
        if _wants_finetune(args, target, quantization["drift"]):
            _finetune_onnx(args, path, float_path, contract, preprocessing, calibration, validation, target, quantization)
        write_contract(path, preprocessing, describe_onnx(path), source, quantization, contract.get("thresholds"))
        report["static"] = {"file": path.name, "size_bytes": path.stat().st_size, **quantization}
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    write_json(_beside(out / float_path.name, "quantize_report"), report)


def _print_sensitivity(errors: list[LayerError], mixed: MixedPrecision | None, top: int = 5) -> None:
    """The layers whose own int8 error is largest, and what mixed precision kept in float."""
    print(f"layers with the largest int8 error of their own (of {len(errors)}; SQNR dB, higher is better):")
    print(f"  {'own':>5} {'accum.':>6}  layer")
    for error in errors[:top]:
        print(f"  {error.own_sqnr_db:5.1f} {error.accumulated_sqnr_db:6.1f}  {error.node} ({error.op_type})")
    if mixed is None:
        return
    for trial in mixed.trials:
        verdict = "kept in float" if trial["kept"] else "no gain, back to int8"
        drift = trial["drift"]
        print(f"  float {trial['node']}: cos mean {drift['cos_mean']:.4f} min {drift['cos_min']:.4f} -> {verdict}")
    status = "met" if mixed.target_met else "NOT met"
    print(
        f"mixed precision: {len(mixed.float_nodes)} layer(s) in float, cos mean {mixed.drift_all_int8['cos_mean']:.4f} -> "
        f"{mixed.drift['cos_mean']:.4f}, min {mixed.drift_all_int8['cos_min']:.4f} -> {mixed.drift['cos_min']:.4f}; target {status}"
    )


def _finetune_onnx(
    args: argparse.Namespace,
    path: Path,
    float_path: Path,
    contract: dict,
    preprocessing,
    calibration,
    validation,
    target: DriftTarget,
    quantization: dict,
) -> None:
    """Quantization-aware fine-tune for static ONNX: the fine-tuned PT2E graph written as QDQ
    (docemb.quantize.pt2e_onnx) replaces onnxruntime's post-training file if it drifts less;
    `quantization` (the contract record) is updated in place."""
    from docemb.contract import describe_onnx
    from docemb.edge_model import front_modules
    from docemb.embedders import onnx_embedder
    from docemb.errors import DocembError
    from docemb.model import load_model
    from docemb.quantize.calibration import finetune_images
    from docemb.quantize.pt2e_onnx import finetuned_onnx

    checkpoint = contract["source"].get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        message = f"{float_path}: the fine-tune starts from the PyTorch checkpoint its contract names ({checkpoint}), which is not there"
        if args.qat == "always":
            raise DocembError(message)
        print(f"  static: no fine-tune: {message}")
        return
    model = load_model(checkpoint)
    front_stride = _float_front_stride(args)
    described = describe_onnx(float_path)
    io_names = (described["input"]["name"], described["output"]["name"])
    plan = _qat_plan(args, preprocessing, finetune_images(args.calib, args.qat_images))
    reference = onnx_embedder(float_path)(validation)
    measure = partial(_print_drift, reference=reference, validation=validation, target=target)

    def write_tuned(tuned: Path) -> None:
        finetuned_onnx(model, tuned, calibration, plan, io_names, front_stride)

    drift, record = _finetune("static", path, write_tuned, quantization["drift"], measure, target, plan)
    quantization["qat"] = record
    if record["kept"]:  # the record described onnxruntime's file, which the fine-tuned one replaced
        del quantization["float_nodes"]
        quantization |= {
            "scheme": "PT2E static QDQ int8, quantization-aware fine-tuned",
            "calibration": _histogram_calibration(args, calibration),
            "float_front": front_modules(model.backbone, front_stride, model.config.input_size),
            "drift": drift,
        }


def _run_tflite(args: argparse.Namespace, float_path: Path, contract: dict, preprocessing, out: Path, source: dict) -> None:
    """int8 .tflite files from the checkpoint the float file's contract names (docemb.quantize.tflite)."""
    from docemb.atomic import write_json
    from docemb.contract import builtin_normalization, describe_model, write_contract
    from docemb.edge_model import front_modules
    from docemb.embedders import model_embedder
    from docemb.errors import DocembError
    from docemb.litert import delegation, op_counts
    from docemb.model import load_model
    from docemb.quantize.sensitivity import DriftTarget
    from docemb.quantize.tflite import quantize_tflite

    if builtin_normalization(contract):
        raise DocembError(f"{float_path}: has normalisation built in; quantize the file exported without --builtin-normalization")
    checkpoint = source["checkpoint"]
    if not checkpoint or not Path(checkpoint).is_file():
        raise DocembError(
            f"{float_path}: int8 TFLite is made from the PyTorch checkpoint its contract names ({checkpoint}), which is not there"
        )
    model = load_model(checkpoint)
    layout = contract["input"]["layout"]
    calibration, validation = _calibration_sets(args, preprocessing) if {"static", "full"} & set(args.include) else (None, None)
    front_stride = _float_front_stride(args)
    reference = model_embedder(float_path)(validation) if validation is not None else None
    target = DriftTarget(*args.drift_target)
    finetune_pool: list | None = None  # loaded once, for the first kind that needs it
    report: dict = {"float_model": str(float_path)}
    for kind in args.include:
        path = out / f"{float_path.stem}_int8_{kind}.tflite"
        float_input = kind == "full" and args.input_type == "float32"
        float_front = front_stride if kind == "static" else 0
        quantize_tflite(model, path, None if kind == "dynamic" else calibration, layout, float_input, float_front)
        quantization = {
            "scheme": f"litert-torch PT2E {'full-integer static' if kind == 'full' else kind} int8",
            "weights": "int8 symmetric per-channel",
            "activations": "quantized at run time" if kind == "dynamic" else "int8 per-tensor",
            "float_front": front_modules(model.backbone, float_front, model.config.input_size),
        }
        if reference is not None:
            measure = partial(_print_drift, reference=reference, validation=validation, target=target)
            drift = measure(kind, path)
            if kind != "dynamic":
                quantization["calibration"] = _histogram_calibration(args, calibration)
                layers_report = _beside(path, "layers")
                if target.met(drift):
                    layers_report.unlink(missing_ok=True)  # an earlier run's, for another file
                else:
                    _tflite_layer_costs(model, calibration, validation, layout, float_front, layers_report)
                if _wants_finetune(args, target, drift):
                    if finetune_pool is None:
                        from docemb.quantize.calibration import finetune_images

                        finetune_pool = finetune_images(args.calib, args.qat_images)
                    plan = _qat_plan(args, preprocessing, finetune_pool)

                    def write_tuned(tuned: Path) -> None:
                        quantize_tflite(model, tuned, calibration, layout, float_input, float_front, qat=plan)

                    drift, quantization["qat"] = _finetune(kind, path, write_tuned, drift, measure, target, plan)
            quantization["drift"] = drift
            quantization["drift_target"] = {"cos_mean": target.cos_mean, "cos_min": target.cos_min}
        delegated = delegation(path)
        quantization |= {
            "xnnpack_partitions": delegated.partitions,
            "not_delegated": delegated.ops_left_out,
            "float_ops": _float_ops(op_counts(path)),
        }
        write_contract(path, preprocessing, describe_model(path), source, quantization, contract.get("thresholds"))
        report[kind] = {"file": path.name, "size_bytes": path.stat().st_size, **quantization}
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB; {delegated.summary()})")
    write_json(_beside(out / float_path.name, "quantize_report"), report)


def _beside(path: Path, what: str) -> Path:
    """A JSON report beside `path` named after the whole file name, as its contract is: an ONNX
    and a TFLite file of the same stem share a folder."""
    return path.with_name(f"{path.name}.{what}.json")


def _tflite_layer_costs(model, calibration, validation, layout: str, float_front: int, report: Path, top: int = 5) -> None:
    """Where post-training int8 TFLite misses the target: each layer's cost (its activations in
    float, the rest int8; docemb.quantize.pt2e_sensitivity), the worst printed, all written
    to `report`."""
    from dataclasses import asdict

    from docemb.atomic import write_json
    from docemb.quantize.pt2e_sensitivity import layer_costs

    all_int8, costs = layer_costs(model, calibration, validation[:LAYER_ERROR_IMAGES], layout, float_front)
    _print_layer_costs(all_int8, costs, top)
    write_json(
        report,
        {
            "validation_images": min(len(validation), LAYER_ERROR_IMAGES),
            "all_int8": all_int8,
            "layers": [asdict(c) for c in costs],
        },
    )


def _print_layer_costs(all_int8: dict[str, float], costs: list[LayerCost], top: int) -> None:
    print(
        f"  layers whose int8 activations cost the most (of {len(costs)}; cosine to float gained with that layer in float, "
        f"all int8: mean {all_int8['cos_mean']:.4f} min {all_int8['cos_min']:.4f}):"
    )
    print(f"  {'mean':>7} {'min':>7}  layer")
    for cost in costs[:top]:
        print(f"  {cost.gain_mean:+.4f} {cost.gain_min:+.4f}  {cost.layer}")


def _print_drift(label: str, path: Path, *, reference, validation, target: DriftTarget) -> dict[str, float]:
    """Cosine of `path`'s embeddings to the float model's on the validation images, printed."""
    from docemb.embedders import onnx_embedder
    from docemb.evaluation import cosine_drift

    if path.suffix == ".tflite":  # no contract beside the file yet, so not model_embedder
        from docemb.litert import tflite_embedder

        embedder = tflite_embedder(path)
    else:
        embedder = onnx_embedder(path)
    drift = cosine_drift(reference, embedder(validation))
    met = "met" if target.met(drift) else "NOT met"
    print(
        f"  {label}: cos to float mean {drift['cos_mean']:.4f} min {drift['cos_min']:.4f} on {len(validation)} images (target {met})"
    )
    return drift


def _wants_finetune(args: argparse.Namespace, target: DriftTarget, post_training: dict[str, float]) -> bool:
    """--qat always, or auto where post-training int8 misses the drift target."""
    return args.qat == "always" or (args.qat == "auto" and not target.met(post_training))


def _qat_plan(args: argparse.Namespace, preprocessing, images: list) -> QatPlan:
    return QatPlan(images, preprocessing, QatSettings(steps=args.qat_steps, lr=args.qat_lr))


def _histogram_calibration(args: argparse.Namespace, calibration) -> dict:
    """The contract's record of PT2E's histogram calibration (TFLite int8, fine-tuned ONNX)."""
    return {"method": "histogram", "images": len(calibration), "folders": [str(f) for f in args.calib]}


def _float_front_stride(args: argparse.Namespace) -> int:
    from docemb.edge_model import DEFAULT_FLOAT_FRONT_STRIDE

    return DEFAULT_FLOAT_FRONT_STRIDE if args.float_front is None else args.float_front


def _finetune(
    kind: str,
    path: Path,
    write_tuned: Callable[[Path], None],
    post_training: dict[str, float],
    measure: Callable[[str, Path], dict[str, float]],
    target: DriftTarget,
    plan: QatPlan,
) -> tuple[dict[str, float], dict]:
    """Quantization-aware fine-tune of `kind` into a sibling file that replaces `path` only if it
    drifts less (target met where it was not, else a higher minimum cosine); returns the drift
    kept and the record for the model card."""
    settings = plan.settings
    print(f"  {kind}: quantization-aware fine-tune, {settings.steps} steps on {len(plan.images)} images")
    tuned = path.with_name(f"{path.stem}.qat{path.suffix}")
    write_tuned(tuned)
    drift = measure(f"{kind} fine-tuned", tuned)
    kept = (target.met(drift), drift["cos_min"]) > (target.met(post_training), post_training["cos_min"])
    if kept:
        tuned.replace(path)
    else:
        tuned.unlink()
    print(f"  {kind}: {'fine-tuned model kept' if kept else 'no gain; post-training model kept'}")
    record = {
        "steps": settings.steps,
        "lr": settings.lr,
        "batch_size": settings.batch_size,
        "images": len(plan.images),
        "loss": "1 - cos to float + squared error of pairwise cosine scores",
        "post_training_drift": post_training,
        "fine_tuned_drift": drift,
        "kept": kept,
    }
    return (drift if kept else post_training), record


def _calibration_sets(args: argparse.Namespace, preprocessing):
    """Calibration images and disjoint validation images (for drift) from --calib."""
    from docemb.quantize.calibration import calibration_inputs

    calibration = calibration_inputs(args.calib, preprocessing, args.calib_count, offset=0)
    validation = calibration_inputs(args.calib, preprocessing, args.validation_count, offset=1, seed=1)
    return calibration, validation


def _float_ops(counts: dict[str, int]) -> dict[str, int]:
    """Ops of an int8 .tflite that still compute in float32 (QUANTIZE/DEQUANTIZE only convert)."""
    return {
        key.split()[0]: n for key, n in counts.items() if key.endswith(" float32") and not key.split()[0].endswith("QUANTIZE")
    }
