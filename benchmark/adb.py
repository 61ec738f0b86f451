"""Latency on a phone: LiteRT's `benchmark_model` pushed over adb, its output parsed into the
same Latency record the host measurements use.

The phone and the host share this code: a Device pushes files and runs a command; AdbDevice
does it with `adb -s SERIAL`, LocalDevice in a local folder (a host build of benchmark_model,
and the tests, which run the whole path with a stand-in binary).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from docemb.benchmark.latency import Latency
from docemb.errors import DocembError

REMOTE_DIR = "/data/local/tmp/docemb"
DELEGATES = ("xnnpack", "gpu", "nnapi", "none")


class Device(Protocol):
    name: str

    def push(self, local: Path) -> str:
        """Copy `local` to the device; returns its path there."""

    def shell(self, command: list[str], timeout_s: float) -> str:
        """Run `command` on the device; returns what it printed (stdout and stderr)."""


def _run(command: list[str], timeout_s: float) -> str:
    """Run `command` here; its output (stdout and stderr), or an error naming the command and its message."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise DocembError(
            f"{shlex.join(command)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}"
        )
    return result.stdout + result.stderr


@dataclass
class AdbDevice:
    serial: str
    adb: str = "adb"
    remote_dir: str = REMOTE_DIR

    @property
    def name(self) -> str:
        return f"adb:{self.serial}"

    def _adb(self, args: list[str], timeout_s: float = 120) -> str:
        try:
            return _run([self.adb, "-s", self.serial, *args], timeout_s)
        except FileNotFoundError:
            raise DocembError(f"{self.adb}: adb not found; install Android platform-tools or pass its path") from None

    def push(self, local: Path) -> str:
        remote = f"{self.remote_dir}/{local.name}"
        self._adb(["shell", "mkdir", "-p", self.remote_dir])
        self._adb(["push", str(local), remote], timeout_s=600)
        return remote

    def shell(self, command: list[str], timeout_s: float) -> str:
        return self._adb(["shell", shlex.join(command)], timeout_s)


@dataclass
class LocalDevice:
    """This machine, with a folder standing in for /data/local/tmp."""

    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="docemb-device-")))
    name: str = "host"

    def push(self, local: Path) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / local.name
        shutil.copy2(local, target)
        return str(target)

    def shell(self, command: list[str], timeout_s: float) -> str:
        return _run(command, timeout_s)


@dataclass(frozen=True)
class BenchmarkOptions:
    threads: int = 1
    delegate: str = "xnnpack"
    warmup: int = 20
    runs: int = 200
    op_profile: bool = False


def benchmark_command(binary: str, model: str, options: BenchmarkOptions) -> list[str]:
    """benchmark_model's command line. min_secs 0 so that exactly `runs` runs are timed; XNNPACK
    is switched off explicitly for the other delegates, so each row measures one delegate."""
    if options.delegate not in DELEGATES:
        raise DocembError(f"unknown delegate {options.delegate!r}; choose from {', '.join(DELEGATES)}")
    command = [
        binary,
        f"--graph={model}",
        f"--num_threads={options.threads}",
        f"--warmup_runs={options.warmup}",
        "--warmup_min_secs=0",
        f"--num_runs={options.runs}",
        "--min_secs=0",
        f"--use_xnnpack={'true' if options.delegate == 'xnnpack' else 'false'}",
    ]
    if options.delegate == "gpu":
        command.append("--use_gpu=true")
    if options.delegate == "nnapi":
        command.append("--use_nnapi=true")
    if options.op_profile:
        command.append("--enable_op_profiling=true")
    command.append("--report_peak_memory_footprint=true")
    return command


_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"  # ostream prints large doubles as 1.04176e+06
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: (?P<init>{_NUMBER}), First inference: (?P<first>{_NUMBER}), "
    rf"Warmup \(avg\): (?P<warmup>{_NUMBER}), Inference \(avg\): (?P<avg>{_NUMBER})"
)
_OLD_TIMINGS = re.compile(  # releases up to about TF 2.3, and the Android benchmark app
    rf"Average inference timings in us: Warmup: (?P<warmup>{_NUMBER}), Init: (?P<init>{_NUMBER}), Inference: (?P<avg>{_NUMBER})"
)
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: (?P<mb>{_NUMBER})")
_SEVERITY = re.compile(r"^(?:INFO|VERBOSE|WARNING|ERROR): ")
_SECTION = re.compile(r"^=+ (?P<title>[^=]+?) =+$")
_CELLS = re.compile(r"\t|\s{2,}")
REGULAR_RUNS = "Operator-wise Profiling Info for Regular Benchmark Runs:"


@dataclass
class BenchmarkOutput:
    init_ms: float
    first_ms: float | None
    warmup_mean_ms: float
    mean_ms: float
    std_ms: float | None
    median_ms: float | None
    p5_ms: float | None
    p95_ms: float | None
    runs: int | None
    peak_memory_mb: float | None
    ops: list[dict]
    op_types: list[dict]


def _key_values(line: str) -> dict[str, float]:
    return {key: float(value) for key, value in re.findall(rf"(\w+)=({_NUMBER})", line)}


def _profile_tables(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """The 'Run Order' and 'Summary by node type' tables that follow REGULAR_RUNS (the first
    'Run Order' in the log belongs to initialisation). Cells are separated by tabs or by runs of
    spaces; releases before ~2.4 have an extra [start] column."""
    if REGULAR_RUNS not in lines:
        return [], []
    ops, op_types = [], []
    section, has_start = None, False
    for line in lines[lines.index(REGULAR_RUNS) + 1 :]:
        header = _SECTION.match(line.strip())
        if header:
            section = header.group("title")
            continue
        cells = [c for c in _CELLS.split(line.strip()) if c]
        if not cells:
            continue
        if cells[0].startswith("["):
            has_start = "[start]" in cells
            continue
        try:
            if section == "Run Order":
                values = cells[2:] if has_start else cells[1:]
                ops.append(
                    {
                        "node_type": cells[0],
                        "first_ms": float(values[0]),
                        "avg_ms": float(values[1]),
                        "percent": float(values[2].rstrip("%")),
                        "times_called": int(values[5]),
                        "name": values[6] if len(values) > 6 else "",
                    }
                )
            elif section == "Summary by node type":
                op_types.append(
                    {
                        "node_type": cells[0],
                        "count": int(cells[1]),
                        "avg_ms": float(cells[2]),
                        "percent": float(cells[3].rstrip("%")),
                    }
                )
        except (IndexError, ValueError):  # 'Number of nodes executed', 'Timings (microseconds): ...' and the like
            continue
    return ops, op_types


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Read benchmark_model's log: the timings line (init, first inference, warm-up and timed
    averages, in us), the stats of the timed runs (count, std, and median/p5/p95 where the
    release prints them), peak memory, and with --enable_op_profiling the per-op and per-type
    tables. Tolerates the severity prefixes, older releases' formats and scientific notation."""
    lines = [_SEVERITY.sub("", line.rstrip()) for line in text.splitlines()]
    joined = "\n".join(lines)
    timings = _TIMINGS.search(joined) or _OLD_TIMINGS.search(joined)
    if not timings:
        raise DocembError("benchmark_model printed no 'Inference timings in us' line:\n" + text.strip()[-1500:])
    # each 'Running benchmark for at least ...' line is followed by its stats; the last is the timed runs
    stats = [_key_values(lines[i + 1]) for i, line in enumerate(lines[:-1]) if line.startswith("Running benchmark for at least")]
    timed = stats[-1] if stats else {}
    peak = _PEAK.search(joined)
    ops, op_types = _profile_tables(lines)

    def ms(key: str) -> float | None:
        return timed[key] / 1e3 if key in timed else None

    first = timings.groupdict().get("first")
    return BenchmarkOutput(
        init_ms=float(timings["init"]) / 1e3,
        first_ms=float(first) / 1e3 if first else None,
        warmup_mean_ms=float(timings["warmup"]) / 1e3,
        mean_ms=float(timings["avg"]) / 1e3,
        std_ms=ms("std"),
        median_ms=ms("median"),
        p5_ms=ms("p5"),
        p95_ms=ms("p95"),
        runs=int(timed["count"]) if "count" in timed else None,
        peak_memory_mb=float(peak["mb"]) if peak else None,
        ops=ops,
        op_types=op_types,
    )


def device_latencies(
    device: Device, binary: Path, model: Path, runs: list[BenchmarkOptions], timeout_s: float = 600
) -> list[tuple[Latency, BenchmarkOutput]]:
    """Push `binary` and `model` to `device` once, run benchmark_model with each of `runs`, parse its output."""
    if not binary.is_file():
        raise DocembError(f"{binary}: benchmark_model binary not found (LiteRT's prebuilt android_aarch64_benchmark_model)")
    remote_binary = device.push(binary)
    device.shell(["chmod", "+x", remote_binary], timeout_s=30)
    remote_model = device.push(model)
    results = []
    for options in runs:
        text = device.shell(benchmark_command(remote_binary, remote_model, options), timeout_s)
        try:
            output = parse_benchmark_output(text)
        except DocembError as exc:
            raise DocembError(f"{model} on {device.name}: {exc}") from None
        results.append((_latency(output, options, device.name), output))
    return results


def _latency(output: BenchmarkOutput, options: BenchmarkOptions, device: str) -> Latency:
    return Latency(
        runtime=f"benchmark_model {options.delegate}",
        threads=options.threads,
        runs=output.runs or options.runs,
        init_ms=output.init_ms,
        first_ms=output.first_ms if output.first_ms is not None else output.warmup_mean_ms,
        mean_ms=output.mean_ms,
        p50_ms=output.median_ms,
        std_ms=output.std_ms,
        warmup_mean_ms=output.warmup_mean_ms,
        peak_rss_mb=output.peak_memory_mb,
        device=device,
    )
