"""Benchmark every model on the same inputs: operators, size, latency (host runtimes and a
phone), Recall@1 and TPR@FPR, and drift from the float model."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.benchmark.adb import BenchmarkOptions, Device, device_latencies
from docemb.benchmark.latency import measure_in_worker, runtimes_for
from docemb.benchmark.ops import load_support_tables, operator_report
from docemb.contract import check_contract
from docemb.embedders import model_embedder
from docemb.errors import DocembError
from docemb.evaluation import (
    EvalSet,
    build_eval_set,
    capture_preprocessing,
    drift_metrics,
    embed_eval_set,
    framed_templates,
    pair_scores,
    retrieval_metrics,
    verification_metrics,
)
from docemb.preprocess import Preprocessing
from docemb.quantization import QuantizationRecord

LAYER_DRIFT_TOP = 10  # layers reported per model with --layer-drift


@dataclass(frozen=True)
class PhoneRun:
    """benchmark_model on a device (adb) for every .tflite model."""

    device: Device
    binary: Path
    threads: tuple[int, ...] = (1, 4)
    delegates: tuple[str, ...] = ("xnnpack",)
    op_profile: bool = False


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:  # ONNX-only benchmarks run without LiteRT
        return None


def environment(threads: tuple[int, ...], runs: int, warmup: int, phone: PhoneRun | None) -> dict:
    import onnxruntime

    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "ai_edge_litert": _version("ai-edge-litert"),
        "numpy": np.__version__,
        "threads": list(threads),
        "runs": runs,
        "warmup": warmup,
        "phone": {"device": phone.device.name, "benchmark_model": str(phone.binary)} if phone else None,
    }


def _latencies(
    path: Path, sample: np.ndarray, threads: tuple[int, ...], runs: int, warmup: int, phone: PhoneRun | None
) -> list[dict]:
    """Every runtime x thread count on the host (the default runtime at the first thread count
    first: the figure tables and gates compare), then the phone's runs."""
    results = [
        measure_in_worker(path, sample, runtime, count, warmup, runs).to_dict()
        for runtime in runtimes_for(path)
        for count in threads
    ]
    if phone and path.suffix == ".tflite":
        runs_on_phone = [
            BenchmarkOptions(count, delegate, warmup, runs, phone.op_profile)
            for delegate in phone.delegates
            for count in phone.threads
        ]
        for latency, output in device_latencies(phone.device, phone.binary, path, runs_on_phone):
            profile = {"by_type": output.op_types, "run_order": output.ops} if phone.op_profile else None
            results.append({**latency.to_dict(), "op_profile": profile})
    return results


def drift_reference(path: Path, reference: Path, contracts: dict[Path, dict]) -> Path | None:
    """The float model `path` should be compared with: the file it was quantized from when that
    is benchmarked too, else the reference when both come from the same checkpoint; None for
    other weights (untrained baselines, peers against docemb's model)."""
    source = contracts[path]["source"]
    if source.get("untrained"):
        return None
    by_name = {p.name: p for p in contracts}
    own_float = by_name.get(source.get("float_model") or "")
    if own_float is not None and contracts[own_float]["sha256"] == source.get("float_sha256"):
        return own_float
    reference_checkpoint = contracts[reference]["source"].get("checkpoint")
    return reference if reference_checkpoint and source.get("checkpoint") == reference_checkpoint else None


def _role(path: Path, reference: Path, contract: dict) -> str:
    source = contract["source"]
    if path == reference:
        return "reference"
    if source.get("untrained"):
        return "baseline (untrained)"
    if source.get("peer"):
        return f"peer ({source['peer']})"
    return "model"


def _layer_drift(
    path: Path, float_model: Path | None, contract: dict, eval_sets: list[EvalSet], prep: Preprocessing
) -> list[dict] | None:
    """The layers with the largest own int8 error, for onnxruntime's QDQ file of a float ONNX
    model benchmarked too (TFLite int8 and fine-tuned QDQ graphs do not keep the float graph's
    tensor names)."""
    quantization = contract.get("quantization")
    graph = QuantizationRecord.from_dict(quantization).graph if quantization else None
    if graph != "ort-qdq" or float_model is None or float_model.suffix != ".onnx":
        return None
    from docemb.layer_drift import layer_errors

    inputs = np.concatenate([prep.normalize(s.queries[:8]) for s in eval_sets])
    return [asdict(error) for error in layer_errors(float_model, path, inputs, contract["input"]["name"])[:LAYER_DRIFT_TOP]]


def benchmark(
    models: list[Path],
    reference: Path,
    eval_folders: list[Path],
    threads: tuple[int, ...] = (1, 2, 4),
    runs: int = 200,
    warmup: int = 20,
    phone: PhoneRun | None = None,
    layer_drift: bool = False,
    queries_per_template: int = 2,
) -> tuple[dict, dict]:
    """The report (plain data, for bench.json) and the pair scores per eval set and model (for
    the histograms). Every model must carry its contract; all must share one preprocessing, up
    to how templates are registered (each model's templates are drawn as its contract says; the
    captures are the same for all). Drift compares each model with its own float model (see
    drift_reference)."""
    if reference not in models:
        models = [reference, *models]
    contracts = {path: check_contract(path) for path in models}
    preps = {path: Preprocessing.from_dict(c["preprocessing"]) for path, c in contracts.items()}
    prep = capture_preprocessing(preps.values(), "benchmark")
    eval_sets = [build_eval_set(folder, preps[reference], queries_per_template, seed=0) for folder in eval_folders]
    sets_of = {preps[reference]: eval_sets}
    for other in set(preps.values()) - {preps[reference]}:  # the same captures, templates drawn as other models register them
        sets_of[other] = [replace(s, templates=framed_templates(f, other)) for s, f in zip(eval_sets, eval_folders)]
    names = [s.name for s in eval_sets]
    if len(set(names)) != len(names):
        raise DocembError(f"eval folders share a name ({names}); give folders with distinct parent/name")

    workers = os.cpu_count() or 1
    embedded = {
        path: {s.name: embed_eval_set(model_embedder(path, threads=workers), prep, s) for s in sets_of[preps[path]]}
        for path in tqdm(models, desc="embed eval sets", unit="model")
    }
    sample = prep.normalize(eval_sets[0].queries[:1]) if eval_sets else np.zeros((1, 3, prep.size, prep.size), np.float32)
    tables = load_support_tables()
    rows, scores = [], {s.name: {} for s in eval_sets}
    for path in tqdm(models, desc="bench", unit="model"):
        contract = contracts[path]
        float_model = drift_reference(path, reference, contracts)
        evaluation = {}
        for eval_set in eval_sets:
            embeddings = embedded[path][eval_set.name]
            metrics = {
                **retrieval_metrics(embeddings, eval_set.query_labels),
                **verification_metrics(embeddings, eval_set.query_labels),
            }
            if float_model is not None:
                metrics.update(drift_metrics(embedded[float_model][eval_set.name], embeddings))
            evaluation[eval_set.name] = metrics
            scores[eval_set.name][path.name] = pair_scores(embeddings, eval_set.query_labels)
        rows.append(
            {
                "name": path.name,
                "file": str(path),
                "format": path.suffix.lstrip("."),
                "role": _role(path, reference, contract),
                "quantization": (contract.get("quantization") or {}).get("scheme"),
                "float_model": contract["source"].get("float_model"),
                "drift_against": float_model.name if float_model else None,
                "size_mb": path.stat().st_size / 1e6,
                "latency": _latencies(path, sample, threads, runs, warmup, phone),
                "operators": operator_report(path, tables),
                "eval": evaluation,
                "layer_drift": _layer_drift(path, float_model, contract, eval_sets, prep) if layer_drift else None,
            }
        )
    report = {
        "reference": str(reference),
        "eval_sets": {s.name: {"templates": len(s.templates), "queries": len(s.queries)} for s in eval_sets},
        "environment": environment(threads, runs, warmup, phone),
        "support_tables": [{"delegate": t.delegate, "source": t.source, "version": t.version} for t in tables],
        "models": rows,
    }
    return report, scores
