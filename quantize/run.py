"""The quantize stage as functions: `quantize(QuantizeOptions) -> list[QuantizedFile]`.

A float file exported by `docemb export` (its contract beside it) becomes int8 files of the
same format, each with its contract and a QuantizationRecord (docemb.quantization). The options
are saved beside the outputs as YAML, a valid `--config` for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from docemb.atomic import write_json, write_text
from docemb.contract import check_contract, describe_model, write_contract
from docemb.errors import DocembError
from docemb.formats import GraphKind, includes, lookup
from docemb.lock import output_lock
from docemb.options import to_yaml
from docemb.preprocess import Preprocessing
from docemb.quantization import Calibration, FineTune, QuantizationRecord, QuantizedFile
from docemb.quantize.qat import QatPlan, QatSettings
from docemb.quantize.sensitivity import DriftTarget

if TYPE_CHECKING:
    import numpy as np

    from docemb.model import EmbeddingModel
    from docemb.quantize.dynamic import DynamicChoice

# layer-by-layer errors keep every activation of two models in memory: a few MB per image, and
# TFLite's cost per layer runs the validation images once per layer
LAYER_ERROR_IMAGES = 128
FINETUNE_LOSS = "1 - cos to float + squared error of pairwise cosine scores"


@dataclass
class QuantizeOptions:
    model: str = field(default="", metadata={"help": "float .onnx or .tflite written by `docemb export`, its contract beside it"})
    calib: list[str] = field(
        default_factory=list, metadata={"help": "image folder(s) to calibrate on, like the images users match (static, full)"}
    )
    out: str | None = field(default=None, metadata={"help": "output folder (default: the model's folder)"})
    ckpt: str | None = field(
        default=None,
        metadata={"help": "float checkpoint for TFLite int8 and the ONNX fine-tune (default: the one the contract names)"},
    )
    include: list[str] = field(
        default_factory=list,
        metadata={"help": "int8 kinds: dynamic, static and, for TFLite, full (default: all of the model's format)"},
    )
    methods: list[str] = field(
        default_factory=lambda: ["minmax", "entropy", "percentile"],
        metadata={"help": "static ONNX calibration methods to compare"},
    )
    calib_count: int = field(default=128, metadata={"help": "calibration images"})
    validation_count: int = field(
        default=512, metadata={"help": "held-out images of the --calib folders that drift is measured on (docs/quantization.md)"}
    )
    float_front: int | None = field(
        default=None,
        metadata={
            "help": "static TFLite and fine-tuned ONNX: keep the blocks up to this output stride in float (None: docemb.edge_model's)"
        },
    )
    input_type: str = field(default="int8", metadata={"help": "full-integer TFLite input", "choices": ("int8", "float32")})
    qat: str = field(
        default="auto",
        metadata={
            "help": "quantization-aware fine-tune of static and full int8: auto where post-training int8 misses --drift-target",
            "choices": ("auto", "always", "never"),
        },
    )
    qat_kinds: list[str] = field(
        default_factory=lambda: ["static", "full"],
        metadata={"help": "the int8 kinds --qat applies to (full: TFLite full integer)"},
    )
    qat_steps: int = field(default=QatSettings.steps, metadata={"help": "fine-tune steps of 32 images"})
    qat_lr: float = field(default=QatSettings.lr, metadata={"help": "fine-tune learning rate"})
    qat_images: int = field(default=1024, metadata={"help": "calibration-pool images the fine-tune draws from"})
    drift_target: list[float] = field(
        default_factory=lambda: [0.99, 0.97], metadata={"help": "MEAN MIN cosine to float that static int8 must keep"}
    )
    dynamic_target: float = field(
        default=0.998, metadata={"help": "ONNX dynamic: layers go int8 largest first while the mean cosine stays at this"}
    )
    max_float_nodes: int = field(
        default=4,
        metadata={"help": "layers static ONNX may keep in float to meet --drift-target (0: all int8, no float front either)"},
    )
    diagnose: bool = field(
        default=True,
        metadata={
            "help": "TFLite static and full int8 that miss --drift-target: measure each layer's int8 cost (about 2 minutes for full integer)"
        },
    )

    def validate(self) -> None:
        if not self.model:
            raise DocembError("give --model FLOAT_MODEL (.onnx or .tflite written by `docemb export`)")
        if len(self.drift_target) != 2:
            raise DocembError(f"drift_target takes MEAN MIN, got {self.drift_target}")
        unknown = (set(self.include) | set(self.qat_kinds)) - set(includes("quantize"))
        if unknown:
            raise DocembError(f"unknown int8 kind(s) {sorted(unknown)}; choose from {', '.join(includes('quantize'))}")


@dataclass
class Job:
    """What every int8 kind of one float file needs, resolved once."""

    options: QuantizeOptions
    float_path: Path
    contract: dict
    preprocessing: Preprocessing
    out: Path
    source: dict
    kinds: list[str]
    target: DriftTarget
    calibration: np.ndarray | None = None
    validation: np.ndarray | None = None
    finetune_pool: list | None = None  # loaded once, for the first kind that fine-tunes
    reference: np.ndarray | None = None  # the float model's embeddings of `validation`, once

    def path(self, kind: str) -> Path:
        return lookup("quantize", self.float_path.suffix, kind).path(self.out, self.float_path.stem)

    def write_contract(self, path: Path, record: QuantizationRecord) -> None:
        thresholds, verification = self.contract.get("thresholds"), self.contract.get("verification")
        io = describe_model(path)
        write_contract(path, self.preprocessing, io, self.source, record.to_dict(), thresholds, verification)


def quantize(options: QuantizeOptions) -> list[QuantizedFile]:
    """Every int8 kind asked for, written beside the float file (or in --out), with
    `FLOAT.quantize_report.json` and the options as `FLOAT.quantize.yaml`."""
    options.validate()
    job = prepare(options)
    with output_lock(job.out):
        if job.float_path.suffix == ".tflite":
            from docemb.quantize.run_tflite import quantize_tflite_kinds

            files = quantize_tflite_kinds(job)
        else:
            files = [onnx_dynamic(job) if kind == "dynamic" else onnx_static(job) for kind in job.kinds]
        report = {"float_model": str(job.float_path), **{f.kind: f.report_row() for f in files}}
        write_json(beside(job.out / job.float_path.name, "quantize_report"), report)
        write_text(job.out / f"{job.float_path.name}.quantize.yaml", to_yaml(options))
    return files


def prepare(options: QuantizeOptions) -> Job:
    float_path = Path(options.model)
    if not float_path.is_file():
        raise DocembError(f"{float_path}: model not found")
    if float_path.suffix not in (".onnx", ".tflite"):
        raise DocembError(f"{float_path}: not an .onnx or .tflite file")
    contract = check_contract(float_path)
    kinds = options.include or includes("quantize", float_path.suffix)
    if "full" in kinds and float_path.suffix == ".onnx":
        raise DocembError(f"{float_path}: full is a TFLite kind; ONNX static is all int8 with --max-float-nodes 0")
    static = {"static", "full"} & set(kinds)
    if static and not options.calib:
        raise DocembError("static quantization needs --calib FOLDER (images like the ones the model will see)")
    source = {
        "float_model": float_path.name,
        "float_sha256": contract["sha256"],
        "checkpoint": options.ckpt or contract["source"].get("checkpoint"),
        **({"peer": contract["source"]["peer"]} if contract["source"].get("peer") else {}),
    }
    preprocessing = Preprocessing.from_dict(contract["preprocessing"])
    job = Job(
        options,
        float_path,
        contract,
        preprocessing,
        Path(options.out) if options.out else float_path.parent,
        source,
        kinds,
        DriftTarget(*options.drift_target),
    )
    if options.calib:  # static kinds calibrate; every kind measures its drift (dynamic: its choice of layers)
        job.calibration, job.validation = calibration_sets(options, preprocessing)
    return job


def calibration_sets(options: QuantizeOptions, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Calibration images and disjoint validation images (for drift) from --calib."""
    from docemb.quantize.calibration import calibration_inputs

    calibration = calibration_inputs(options.calib, preprocessing, options.calib_count, offset=0)
    validation = calibration_inputs(options.calib, preprocessing, options.validation_count, offset=1, seed=1)
    return calibration, validation


def onnx_dynamic(job: Job) -> QuantizedFile:
    """onnxruntime dynamic int8, layers int8 largest first while --dynamic-target holds."""
    from docemb.quantize.ort import quantize_dynamic_int8

    path = job.path("dynamic")
    choice = quantize_dynamic_int8(job.float_path, path, job.validation, job.options.dynamic_target)
    record = dynamic_record(job, choice, "ort-dynamic", "onnxruntime dynamic int8", "int8 per-channel")
    job.write_contract(path, record)
    return QuantizedFile("dynamic", path, record)


def dynamic_record(job: Job, choice: DynamicChoice, graph: GraphKind, scheme: str, weights: str) -> QuantizationRecord:
    """The record of a dynamic int8 file whose layers went int8 largest first; the choice printed."""
    goal = job.options.dynamic_target
    record = QuantizationRecord(
        graph,
        scheme,
        weights,
        "quantized at run time",
        int8_weight_share=choice.int8_weight_share,
        float_nodes=choice.float_layers,
    )
    print(
        f"  dynamic: {len(choice.int8_layers)} of {len(choice.int8_layers) + len(choice.float_layers)} weighted layers "
        f"in int8, largest first ({choice.int8_weight_share:.1%} of their parameters)"
    )
    if choice.drift is not None:
        record.drift, record.drift_validation_images = choice.drift, len(job.validation)
        record.drift_target = {"cos_mean": goal}
        met = "met" if choice.target_met else "NOT met"
        print(
            f"  dynamic: cos to float mean {choice.drift['cos_mean']:.4f} min {choice.drift['cos_min']:.4f} "
            f"on {len(job.validation)} images (target mean {goal} {met})"
        )
    return record


def onnx_static(job: Job) -> QuantizedFile:
    """onnxruntime static QDQ, the calibration method picked by drift; where the target is
    missed, the PT2E graph with the float front, then a fine-tune, then, where neither replaced
    onnxruntime's file, its worst layers kept in float (the search takes minutes and either
    would replace its file anyway)."""
    from docemb.layer_drift import layer_errors
    from docemb.quantize.ort import METHODS, pick_static_method

    unknown = set(job.options.methods) - set(METHODS)
    if unknown:
        raise DocembError(f"unknown calibration method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    path = job.path("static")
    best, results = pick_static_method(job.float_path, path, job.calibration, job.validation, tuple(job.options.methods))
    print(f"static QDQ calibration on {len(job.calibration)} images, drift on {len(job.validation)} others:")
    for method, drift in results.items():
        print(
            f"  {method:<10} cos mean {drift['cos_mean']:.4f}  min {drift['cos_min']:.4f}{'  <- kept' if method == best else ''}"
        )
    errors = layer_errors(job.float_path, path, job.validation[:LAYER_ERROR_IMAGES])
    record = QuantizationRecord(
        "ort-qdq",
        "onnxruntime static QDQ int8",
        "int8 symmetric per-channel",
        "uint8 asymmetric per-tensor",
        drift=results[best],
        drift_target=_target_dict(job.target),
        calibration=Calibration(best, len(job.calibration), list(job.options.calib), results),
        float_nodes=[],
    )
    front = not job.target.met(record.drift) and job.options.max_float_nodes > 0
    if front or wants_finetune(job, "static", record.drift):  # both start from the float checkpoint
        model = load_checkpoint(job, required=job.options.qat == "always" and "static" in job.options.qat_kinds)
        if model is not None and front:
            record = _float_front_onnx(job, path, record, model)
        if model is not None and wants_finetune(job, "static", record.drift):
            record = _finetune_onnx(job, path, record, model)
    mixed = None
    if record.graph == "ort-qdq":  # neither the float front nor a fine-tune replaced onnxruntime's file
        mixed = _mixed_precision(job, path, best, errors, record.drift)
        if mixed is not None:
            record.drift, record.float_nodes = mixed.drift, mixed.float_nodes
    print_sensitivity(errors, mixed)
    report = {
        "layers_of": f"onnxruntime static QDQ int8 ({best} calibration)",  # the per-layer errors' file
        "kept": record.scheme,  # where the float front or a fine-tune replaced it, not that file
        "layers": [asdict(e) for e in errors],
        "mixed_precision": asdict(mixed) if mixed else None,
    }
    write_json(beside(path, "layers"), report)
    job.write_contract(path, record)
    return QuantizedFile("static", path, record)


def _mixed_precision(job: Job, path: Path, method: str, errors: list, drift: dict):
    """Below the target, the search that keeps the worst layers (by `errors`) in float,
    rewriting `path`; returns its result, or None where the target is met or no layer may stay float."""
    from docemb.quantize.sensitivity import mixed_precision

    if job.target.met(drift) or job.options.max_float_nodes <= 0:
        return None
    print(f"below the drift target (mean {job.target.cos_mean}, min {job.target.cos_min}): trying layers in float")
    args = (job.calibration, job.validation, method, job.target, job.options.max_float_nodes)
    return mixed_precision(job.float_path, path, errors, *args)


def _float_front_onnx(job: Job, path: Path, record: QuantizationRecord, model: EmbeddingModel) -> QuantizationRecord:
    """The PT2E graph with the float front (as static TFLite has it), at its calibrated ranges,
    replaces onnxruntime's all-int8 file if it drifts less: where that meets the target, no
    fine-tune of minutes follows."""
    from docemb.quantize.pt2e_onnx import post_training_onnx

    candidate = path.with_name(f"{path.stem}.front{path.suffix}")
    post_training_onnx(model, candidate, job.calibration, _io_names(job), float_front_stride(job.options))
    drift = drift_meter(job)("static with a float front", candidate)
    if not job.target.better(drift, record.drift):
        candidate.unlink()
        return record
    candidate.replace(path)
    return _pt2e_record(job, model, record, "PT2E static QDQ int8", drift, compared=record.calibration.compared)


def _finetune_onnx(job: Job, path: Path, record: QuantizationRecord, model: EmbeddingModel) -> QuantizationRecord:
    """The fine-tuned PT2E graph written as QDQ (docemb.quantize.pt2e_onnx) replaces
    the file so far (onnxruntime's, or the float front's) if it drifts less."""
    from docemb.quantize.pt2e_onnx import finetuned_onnx

    io_names, stride, plan = _io_names(job), float_front_stride(job.options), qat_plan(job)

    def write_tuned(tuned: Path) -> None:
        finetuned_onnx(model, tuned, job.calibration, plan, io_names, stride)

    drift, record.qat = finetune("static", path, write_tuned, record.drift, drift_meter(job), job.target, plan)
    if not record.qat.kept:
        return record
    return _pt2e_record(job, model, record, "PT2E static QDQ int8, quantization-aware fine-tuned", drift, qat=record.qat)


def _io_names(job: Job) -> tuple[str, str]:
    """The float ONNX file's input and output names, which a PT2E file written in its place keeps."""
    from docemb.contract import describe_onnx

    described = describe_onnx(job.float_path)
    return described["input"]["name"], described["output"]["name"]


def _pt2e_record(
    job: Job,
    model: EmbeddingModel,
    replaced: QuantizationRecord,
    scheme: str,
    drift: dict[str, float],
    qat: FineTune | None = None,
    compared: dict | None = None,
) -> QuantizationRecord:
    """The record of a PT2E QDQ file (float front, histogram ranges) that replaced `replaced`'s."""
    from docemb.edge_model import front_modules

    stride = float_front_stride(job.options)
    return QuantizationRecord(
        "pt2e-qdq",
        scheme,
        replaced.weights,
        replaced.activations,
        drift=drift,
        drift_target=replaced.drift_target,
        calibration=replace(histogram_calibration(job), compared=compared),  # compared: onnxruntime's methods
        qat=qat,
        float_front=front_modules(model.backbone, stride, model.config.input_size),
    )


def load_checkpoint(job: Job, required: bool) -> EmbeddingModel | None:
    """The float PyTorch model int8 TFLite and the fine-tune start from; None (with a note) when
    it is missing and not `required`."""
    from docemb.model import load_model

    checkpoint = job.source["checkpoint"]  # --ckpt, else the contract's (prepare)
    if checkpoint and Path(checkpoint).is_file():
        return load_model(checkpoint)
    message = f"{job.float_path}: the float checkpoint ({checkpoint or 'none named'}) is not there; give --ckpt"
    if required:
        raise DocembError(message)
    print(f"  static: onnxruntime's file kept, no float front or fine-tune: {message}")
    return None


def print_sensitivity(errors: list, mixed, top: int = 5) -> None:
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
    before, after = mixed.drift_all_int8, mixed.drift
    print(
        f"mixed precision: {len(mixed.float_nodes)} layer(s) in float, cos mean {before['cos_mean']:.4f} -> "
        f"{after['cos_mean']:.4f}, min {before['cos_min']:.4f} -> {after['cos_min']:.4f}; target {status}"
    )


def beside(path: Path, what: str) -> Path:
    """A JSON report beside `path` named after the whole file name, as its contract is: an ONNX
    and a TFLite file of the same stem share a folder."""
    return path.with_name(f"{path.name}.{what}.json")


def drift_meter(job: Job) -> Callable[[str, Path], dict[str, float]]:
    """Cosine of a file's embeddings to the float model's on the validation images, printed."""
    from docemb.embedders import model_embedder, onnx_embedder
    from docemb.evaluation import cosine_drift

    if job.reference is None:
        job.reference = model_embedder(job.float_path)(job.validation)

    def measure(label: str, path: Path) -> dict[str, float]:
        if path.suffix == ".tflite":  # no contract beside the file yet, so not model_embedder
            from docemb.litert import tflite_embedder

            embedder = tflite_embedder(path)
        else:
            embedder = onnx_embedder(path)
        drift = cosine_drift(job.reference, embedder(job.validation))
        met = "met" if job.target.met(drift) else "NOT met"
        count = len(job.validation)
        print(f"  {label}: cos to float mean {drift['cos_mean']:.4f} min {drift['cos_min']:.4f} on {count} images (target {met})")
        return drift

    return measure


def wants_finetune(job: Job, kind: str, post_training: dict[str, float]) -> bool:
    """For a kind in --qat-kinds: --qat always, or auto where post-training int8 misses the drift target."""
    if kind not in job.options.qat_kinds:
        return False
    return job.options.qat == "always" or (job.options.qat == "auto" and not job.target.met(post_training))


def qat_plan(job: Job) -> QatPlan:
    from docemb.quantize.calibration import finetune_images

    if job.finetune_pool is None:
        job.finetune_pool = finetune_images(job.options.calib, job.options.qat_images)
    settings = QatSettings(steps=job.options.qat_steps, lr=job.options.qat_lr)
    return QatPlan(job.finetune_pool, job.preprocessing, settings)


def histogram_calibration(job: Job) -> Calibration:
    """PT2E's histogram calibration (TFLite int8, fine-tuned ONNX)."""
    return Calibration("histogram", len(job.calibration), list(job.options.calib))


def float_front_stride(options: QuantizeOptions) -> int:
    from docemb.edge_model import DEFAULT_FLOAT_FRONT_STRIDE

    return DEFAULT_FLOAT_FRONT_STRIDE if options.float_front is None else options.float_front


def _target_dict(target: DriftTarget) -> dict[str, float]:
    return {"cos_mean": target.cos_mean, "cos_min": target.cos_min}


def finetune(
    kind: str,
    path: Path,
    write_tuned: Callable[[Path], None],
    post_training: dict[str, float],
    measure: Callable[[str, Path], dict[str, float]],
    target: DriftTarget,
    plan: QatPlan,
) -> tuple[dict[str, float], FineTune]:
    """Quantization-aware fine-tune of `kind` into a sibling file that replaces `path` only if it
    drifts less (target met where it was not, else a higher minimum cosine); returns the drift
    kept and the record of the fine-tune."""
    settings = plan.settings
    print(f"  {kind}: quantization-aware fine-tune, {settings.steps} steps on {len(plan.images)} images")
    tuned = path.with_name(f"{path.stem}.qat{path.suffix}")
    write_tuned(tuned)
    drift = measure(f"{kind} fine-tuned", tuned)
    kept = target.better(drift, post_training)
    if kept:
        tuned.replace(path)
    else:
        tuned.unlink()
    print(f"  {kind}: {'fine-tuned model kept' if kept else 'no gain; post-training model kept'}")
    record = FineTune(
        settings.steps, settings.lr, settings.batch_size, len(plan.images), FINETUNE_LOSS, post_training, drift, kept
    )
    return (drift if kept else post_training), record
