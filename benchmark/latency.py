"""Host latency through onnxruntime or LiteRT (XNNPACK on or off): load time, first run, then
percentiles after warm-up, and the process's peak memory.

Each measurement runs in a fresh worker process (`python -m docemb.benchmark.latency`), so
peak RSS belongs to that model and runtime alone and no model warms another's caches; the
worker imports neither torch nor the evaluation code.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from docemb.errors import DocembError

ONNX_RUNTIMES = ("onnxruntime",)
TFLITE_RUNTIMES = ("litert+xnnpack", "litert")


@dataclass
class Latency:
    """One model on one runtime at one thread count. Host runs fill the percentiles; a phone's
    benchmark_model reports mean and std only, so its p50/p90/p99 stay None. peak_rss_mb is the
    whole process's peak; runtime_rss_mb what loading the runtime and the model and running it added."""

    runtime: str
    threads: int
    runs: int
    init_ms: float
    first_ms: float
    mean_ms: float
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    std_ms: float | None = None
    warmup_mean_ms: float | None = None
    peak_rss_mb: float | None = None
    runtime_rss_mb: float | None = None
    device: str = "host"
    times_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def runtimes_for(path: str | os.PathLike) -> tuple[str, ...]:
    return TFLITE_RUNTIMES if str(path).endswith(".tflite") else ONNX_RUNTIMES


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, because ru_maxrss survives exec on Linux and
    would report the parent's peak for a fresh worker."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _runner(path: str, sample: np.ndarray, runtime: str, threads: int) -> Callable[[], object]:
    """A zero-argument function that runs the model once on `sample` (batch 1, NCHW normalised),
    the input prepared once so that only the model is timed."""
    if runtime == "onnxruntime":
        from docemb.embedders import onnx_session

        session = onnx_session(path, threads)
        feed = {session.get_inputs()[0].name: sample}
        return lambda: session.run(None, feed)
    if runtime in TFLITE_RUNTIMES:
        from docemb.contract import builtin_normalization, read_contract
        from docemb.litert import interpreter, to_input

        runner = interpreter(path, threads, xnnpack=runtime == "litert+xnnpack")
        detail = runner.get_input_details()[0]
        tensor = to_input(sample, detail, builtin_normalization(read_contract(path)))

        def run() -> None:
            runner.set_tensor(detail["index"], tensor)
            runner.invoke()

        return run
    raise DocembError(f"{path}: unknown runtime {runtime!r}; choose from {', '.join(ONNX_RUNTIMES + TFLITE_RUNTIMES)}")


def measure(path: str, sample: np.ndarray, runtime: str, threads: int = 1, warmup: int = 20, runs: int = 200) -> Latency:
    """Time `path` in this process: load, first run, `warmup` untimed runs, `runs` timed runs."""
    rss_before = _peak_rss_mb()
    start = time.perf_counter()
    run = _runner(path, sample, runtime, threads)
    init_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    run()
    first_ms = (time.perf_counter() - start) * 1e3
    warmup_times = []
    for _ in range(warmup):
        start = time.perf_counter()
        run()
        warmup_times.append((time.perf_counter() - start) * 1e3)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    values = np.asarray(times)
    peak = _peak_rss_mb()
    return Latency(
        runtime=runtime,
        threads=threads,
        runs=runs,
        init_ms=init_ms,
        first_ms=first_ms,
        mean_ms=float(values.mean()),
        p50_ms=float(np.percentile(values, 50)),
        p90_ms=float(np.percentile(values, 90)),
        p99_ms=float(np.percentile(values, 99)),
        std_ms=float(values.std()),
        warmup_mean_ms=float(np.mean(warmup_times)) if warmup_times else None,
        peak_rss_mb=peak,
        runtime_rss_mb=peak - rss_before,
        times_ms=[round(t, 4) for t in times],
    )


def measure_in_worker(
    path: Path, sample: np.ndarray, runtime: str, threads: int, warmup: int, runs: int, timeout_s: float = 600
) -> Latency:
    """measure() in a fresh Python process; raises with the worker's error naming the file."""
    with tempfile.TemporaryDirectory() as tmp:
        sample_path = Path(tmp) / "sample.npy"
        np.save(sample_path, sample)
        command = [sys.executable, "-m", "docemb.benchmark.latency", str(path), str(sample_path), runtime]
        command += ["--threads", str(threads), "--warmup", str(warmup), "--runs", str(runs)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise DocembError(f"{path}: latency worker failed on {runtime}, {threads} thread(s): {result.stderr.strip()[-1500:]}")
    return Latency(**json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.benchmark.latency", description="one latency measurement, as JSON")
    parser.add_argument("model")
    parser.add_argument("sample", help=".npy of one NCHW normalised input")
    parser.add_argument("runtime", choices=ONNX_RUNTIMES + TFLITE_RUNTIMES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    sample = np.load(args.sample)
    latency = measure(args.model, sample, args.runtime, args.threads, args.warmup, args.runs)
    print(json.dumps(latency.to_dict()))


if __name__ == "__main__":
    main()
