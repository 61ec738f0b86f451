"""Benchmark every model on the same inputs: size, latency, Recall@1, drift from the float model."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.benchmark.latency import latency
from docemb.contract import builtin_normalization, check_contract
from docemb.embedders import model_embedder
from docemb.errors import DocembError
from docemb.evaluation import EvalSet, build_eval_set, drift_metrics, embed_eval_set, retrieval_metrics
from docemb.preprocess import Preprocessing


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int, runs: int, warmup: int) -> dict:
    import onnxruntime

    try:
        litert = version("ai-edge-litert")
    except PackageNotFoundError:  # ONNX-only benchmarks run without it
        litert = None
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "ai_edge_litert": litert,
        "numpy": np.__version__,
        "threads": threads,
        "runs": runs,
        "warmup": warmup,
    }


def _delegation(path: Path) -> dict | None:
    """XNNPACK partitions and the ops it left out, for .tflite files."""
    if path.suffix != ".tflite":
        return None
    from docemb.litert import delegation

    result = delegation(path)
    return {"partitions": result.partitions, "not_delegated": result.ops_left_out}


def benchmark(
    models: list[Path],
    reference: Path,
    eval_folders: list[Path],
    threads: int = 1,
    runs: int = 200,
    warmup: int = 20,
    queries_per_template: int = 2,
) -> dict:
    """Every model must carry its contract; all must share one preprocessing."""
    if reference not in models:
        models = [reference, *models]
    contracts = {path: check_contract(path) for path in models}
    preprocessing = {Preprocessing.from_dict(c["preprocessing"]) for c in contracts.values()}
    if len(preprocessing) != 1:
        raise DocembError("models disagree on preprocessing; benchmark models of one architecture together")
    prep = preprocessing.pop()
    eval_sets: list[EvalSet] = [build_eval_set(folder, prep, queries_per_template, seed=0) for folder in eval_folders]
    names = [s.name for s in eval_sets]
    if len(set(names)) != len(names):
        raise DocembError(f"eval folders share a name ({names}); give folders with distinct parent/name")

    reference_embeddings = {
        s.name: embed_eval_set(model_embedder(reference, threads=os.cpu_count() or 1), prep, s) for s in eval_sets
    }
    sample = prep.normalize(eval_sets[0].queries[:1]) if eval_sets else np.zeros((1, 3, prep.size, prep.size), np.float32)
    rows = []
    for path in tqdm(models, desc="bench", unit="model"):
        contract = contracts[path]
        is_baseline = bool(contract["source"].get("untrained"))
        embedder = model_embedder(path, threads=os.cpu_count() or 1)
        evaluation = {}
        for eval_set in eval_sets:
            embeddings = embed_eval_set(embedder, prep, eval_set)
            metrics = retrieval_metrics(embeddings, eval_set.query_labels)
            if not is_baseline:  # drift from the float model means nothing for other weights
                metrics.update(drift_metrics(reference_embeddings[eval_set.name], embeddings))
            evaluation[eval_set.name] = metrics
        rows.append(
            {
                "name": path.name,
                "file": str(path),
                "format": path.suffix.lstrip("."),
                "role": "baseline (untrained)" if is_baseline else ("reference" if path == reference else "model"),
                "quantization": (contract.get("quantization") or {}).get("scheme"),
                "size_mb": path.stat().st_size / 1e6,
                "latency": latency(path, sample, threads, warmup, runs, builtin_normalization(contract)).to_dict(),
                "delegation": _delegation(path),
                "eval": evaluation,
            }
        )
    ref_row = next(r for r in rows if Path(r["file"]) == reference)
    for row in rows:
        row["size_ratio"] = ref_row["size_mb"] / row["size_mb"]
        row["speedup"] = ref_row["latency"]["p50_ms"] / row["latency"]["p50_ms"]
    return {
        "reference": str(reference),
        "eval_sets": {s.name: {"templates": len(s.templates), "queries": len(s.queries)} for s in eval_sets},
        "environment": environment(threads, runs, warmup),
        "models": rows,
    }
