"""Host latency through onnxruntime or LiteRT (XNNPACK): load time, first run, then percentiles after warm-up."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

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


def _onnx_runner(path: str | os.PathLike, sample: np.ndarray, threads: int) -> Callable[[], object]:
    session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: sample}
    return lambda: session.run(None, feed)


def _tflite_runner(path: str | os.PathLike, sample: np.ndarray, threads: int, builtin_normalization=None) -> Callable[[], object]:
    from docemb.litert import interpreter, to_input

    runner = interpreter(path, threads)
    detail = runner.get_input_details()[0]
    tensor = to_input(sample, detail, builtin_normalization)

    def run() -> None:
        runner.set_tensor(detail["index"], tensor)
        runner.invoke()

    return run


def latency(
    path: str | os.PathLike, sample: np.ndarray, threads: int = 1, warmup: int = 20, runs: int = 200, builtin_normalization=None
) -> Latency:
    """Batch-1 latency of `path` (.onnx or .tflite) on `sample` (1, C, H, W, normalised), the
    input set once: the model's time, not the conversion's."""
    start = time.perf_counter()
    if str(path).endswith(".tflite"):
        run = _tflite_runner(path, sample, threads, builtin_normalization)
    else:
        run = _onnx_runner(path, sample, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return Latency(threads=threads, runs=runs, init_ms=init_ms, first_ms=first_ms, **percentiles(times))
