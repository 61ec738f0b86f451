"""int8 .tflite files: static with a float front and full integer from the float checkpoint
(docemb.quantize.tflite), each measured against the float file and fine-tuned where it misses
the drift target; dynamic from the float file itself (docemb.quantize.tflite_dynamic)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from docemb.atomic import write_json
from docemb.contract import builtin_normalization
from docemb.errors import DocembError
from docemb.model import EmbeddingModel
from docemb.quantization import QuantizationRecord, QuantizedFile
from docemb.quantize.run import (
    LAYER_ERROR_IMAGES,
    Job,
    beside,
    drift_meter,
    dynamic_record,
    finetune,
    float_front_stride,
    histogram_calibration,
    load_checkpoint,
    qat_plan,
    wants_finetune,
)
from docemb.quantize.tflite import quantize_tflite

SCHEMES = {"static": "static", "full": "full-integer static"}


def quantize_tflite_kinds(job: Job) -> list[QuantizedFile]:
    if builtin_normalization(job.contract):
        raise DocembError(
            f"{job.float_path}: has normalisation built in; quantize the file exported without --builtin-normalization"
        )
    static_kinds = [kind for kind in job.kinds if kind != "dynamic"]
    model = load_checkpoint(job, required=True) if static_kinds else None
    return [tflite_dynamic(job) if kind == "dynamic" else tflite_kind(job, model, kind) for kind in job.kinds]


def tflite_dynamic(job: Job) -> QuantizedFile:
    """Dynamic int8 from the float file, layers int8 largest first while --dynamic-target holds
    (docemb.quantize.tflite_dynamic); no checkpoint needed."""
    from docemb.quantize.tflite_dynamic import quantize_dynamic_tflite

    path = job.path("dynamic")
    choice = quantize_dynamic_tflite(job.float_path, path, job.validation, job.options.dynamic_target)
    record = dynamic_record(job, choice, "litert-dynamic", "AI Edge Quantizer dynamic int8", "int8 symmetric per-channel")
    _add_delegation(record, path)
    job.write_contract(path, record)
    return QuantizedFile("dynamic", path, record)


def tflite_kind(job: Job, model: EmbeddingModel, kind: str) -> QuantizedFile:
    """Static or full-integer int8: converted, measured, diagnosed and fine-tuned where it misses the target."""
    from docemb.edge_model import front_modules

    path = job.path(kind)
    float_input = kind == "full" and job.options.input_type == "float32"
    float_front = float_front_stride(job.options) if kind == "static" else 0
    layout = job.contract["input"]["layout"]
    quantize_tflite(model, path, job.calibration, layout, float_input, float_front)
    record = QuantizationRecord(
        f"litert-{kind}",  # type: ignore[arg-type]
        f"litert-torch PT2E {SCHEMES[kind]} int8",
        "int8 symmetric per-channel",
        "int8 per-tensor",
        float_front=front_modules(model.backbone, float_front, model.config.input_size),
    )
    if job.validation is not None:
        measure = drift_meter(job)
        record.drift = measure(kind, path)
        record.calibration = histogram_calibration(job)
        _diagnose(job, model, path, record.drift, float_front)
        if wants_finetune(job, kind, record.drift):
            plan = qat_plan(job)

            def write_tuned(tuned: Path) -> None:
                quantize_tflite(model, tuned, job.calibration, layout, float_input, float_front, qat=plan)

            record.drift, record.qat = finetune(kind, path, write_tuned, record.drift, measure, job.target, plan)
        record.drift_target = {"cos_mean": job.target.cos_mean, "cos_min": job.target.cos_min}
    _add_delegation(record, path)
    job.write_contract(path, record)
    return QuantizedFile(kind, path, record)


def _add_delegation(record: QuantizationRecord, path: Path) -> None:
    """What XNNPACK takes of the file and which ops still compute in float."""
    from docemb.litert import delegation, op_counts

    delegated = delegation(path)
    record.xnnpack_partitions = delegated.partitions
    record.not_delegated = delegated.ops_left_out
    record.float_ops = float_ops(op_counts(path))
    print(f"  {path.name}: {delegated.summary()}")


def _diagnose(job: Job, model: EmbeddingModel, path: Path, drift: dict, float_front: int, top: int = 5) -> None:
    """Where post-training int8 misses the target: each layer's cost (its activations in float,
    the rest int8; docemb.quantize.pt2e_sensitivity), the worst printed, all saved beside the file."""
    from docemb.quantize.pt2e_sensitivity import layer_costs

    report = beside(path, "layers")
    if job.target.met(drift) or not job.options.diagnose:
        report.unlink(missing_ok=True)  # an earlier run's, for another file
        return
    validation = job.validation[:LAYER_ERROR_IMAGES]
    all_int8, costs = layer_costs(model, job.calibration, validation, job.contract["input"]["layout"], float_front)
    print(
        f"  layers whose int8 activations cost the most (of {len(costs)}; cosine to float gained with that layer in float, "
        f"all int8: mean {all_int8['cos_mean']:.4f} min {all_int8['cos_min']:.4f}):"
    )
    print(f"  {'mean':>7} {'min':>7}  layer")
    for cost in costs[:top]:
        print(f"  {cost.gain_mean:+.4f} {cost.gain_min:+.4f}  {cost.layer}")
    layers = [asdict(c) for c in costs]
    write_json(report, {"validation_images": len(validation), "all_int8": all_int8, "layers": layers})


def float_ops(counts: dict[str, int]) -> dict[str, int]:
    """Ops of an int8 .tflite that still compute in float32 (QUANTIZE/DEQUANTIZE only convert)."""
    return {
        key.split()[0]: n for key, n in counts.items() if key.endswith(" float32") and not key.split()[0].endswith("QUANTIZE")
    }
