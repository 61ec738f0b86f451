"""Host latency through onnxruntime: load time, first run, then percentiles after warm-up."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from docemb.embedders import onnx_session


@dataclass
class Latency:
    threads: int
    runs: int
    init_ms: float
    first_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def percentiles(times_ms: list[float]) -> dict[str, float]:
    values = np.asarray(times_ms, dtype=np.float64)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def onnx_latency(path: str | os.PathLike, sample: np.ndarray, threads: int = 1, warmup: int = 20, runs: int = 200) -> Latency:
    """Batch-1 latency of `path` on `sample` (1, C, H, W)."""
    start = time.perf_counter()
    session = onnx_session(path, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    feed = {session.get_inputs()[0].name: sample}
    start = time.perf_counter()
    session.run(None, feed)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return Latency(threads=threads, runs=runs, init_ms=init_ms, first_ms=first_ms, **percentiles(times))
