"""`docemb bench MODELS... [--ref FLOAT] --data DIR... [--adb SERIAL --benchmark-model BIN] [--gate EXPR]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def host_threads(counts: tuple[int, ...] = (1, 2, 4)) -> list[int]:
    return [n for n in counts if n <= (os.cpu_count() or 1)] or [1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", type=Path, help=".onnx and .tflite models, each with its contract beside it")
    parser.add_argument("--ref", type=Path, help="float reference for drift (default: the first model)")
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        required=True,
        help="held-out template folder(s); a folder with templates/ inside uses that",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/bench"),
        help="folder for bench.json, bench.md, bench.html and plots (default: runs/bench)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=host_threads(),
        help="host thread counts to time (default: those of 1 2 4 the host has cores for; more threads than cores time contention)",
    )
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model, runtime and thread count (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs (default: 20)")
    parser.add_argument(
        "--layer-drift",
        action="store_true",
        help="also name the layers with the largest int8 error (static QDQ ONNX models whose float ONNX is benchmarked too)",
    )
    phone = parser.add_argument_group("phone (LiteRT benchmark_model over adb; .tflite models only)")
    phone.add_argument("--adb", metavar="SERIAL", help="device serial from `adb devices`")
    phone.add_argument(
        "--benchmark-model",
        type=Path,
        help="LiteRT's benchmark_model binary for the device (android_aarch64_benchmark_model); without --adb a host build runs here",
    )
    phone.add_argument("--phone-threads", type=int, nargs="+", default=[1, 4], help="thread counts on the phone (default: 1 4)")
    phone.add_argument(
        "--delegates", nargs="+", default=["xnnpack"], choices=("xnnpack", "gpu", "nnapi", "none"), help="(default: xnnpack)"
    )
    phone.add_argument("--op-profile", action="store_true", help="also record benchmark_model's per-op-type profile")
    parser.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="EXPR",
        help="release bar, e.g. 'int8.cos_mean>=0.99 and int8.p50_ms<=float.p50_ms'; exits 1 when missed (repeatable)",
    )


def run(args: argparse.Namespace) -> None:
    from docemb.benchmark.adb import AdbDevice, LocalDevice
    from docemb.benchmark.gate import evaluate_gate
    from docemb.benchmark.report import terminal_report, write_reports
    from docemb.benchmark.run import PhoneRun, benchmark
    from docemb.errors import DocembError

    missing = [str(p) for p in [*args.models, *args.data] if not p.exists()]
    if missing:
        raise DocembError(f"not found: {', '.join(missing)}")
    if args.adb and not args.benchmark_model:
        raise DocembError("--adb needs --benchmark-model PATH (LiteRT's android_aarch64_benchmark_model)")
    phone = None
    if args.benchmark_model:
        device = AdbDevice(args.adb) if args.adb else LocalDevice()
        phone = PhoneRun(device, args.benchmark_model, tuple(args.phone_threads), tuple(args.delegates), args.op_profile)
    report, scores = benchmark(
        args.models, args.ref or args.models[0], args.data, tuple(args.threads), args.runs, args.warmup, phone, args.layer_drift
    )
    gates = [evaluate_gate(expression, report) for expression in args.gate]  # a bad expression fails before any file is written
    report["gates"] = [{"expression": g.expression, "passed": g.passed, "failures": g.failures} for g in gates]
    paths = write_reports(report, scores, args.out)
    print()
    print(terminal_report(report))
    print(f"reports: {', '.join(map(str, paths))}")
    for gate in gates:
        verdict = "PASS" if gate.passed else "FAIL (" + "; ".join(gate.failures) + ")"
        print(f"gate {gate.expression!r}: {verdict}")
    if not all(gate.passed for gate in gates):
        sys.exit(1)
