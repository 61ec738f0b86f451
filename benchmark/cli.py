"""`docemb bench MODELS... --ref FLOAT --data DIR [DIR...]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", type=Path, help="ONNX models, each with its contract beside it")
    parser.add_argument("--ref", type=Path, help="float reference for drift (default: the first model)")
    parser.add_argument(
        "--data",
        nargs="+",
        type=Path,
        required=True,
        help="held-out template folder(s); a folder with templates/ inside uses that",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/bench"), help="folder for bench.json and bench.md (default: runs/bench)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for latency (default: 1)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed warm-up runs (default: 20)")


def run(args: argparse.Namespace) -> None:
    from docemb.benchmark.report import terminal_table, write_reports
    from docemb.benchmark.run import benchmark
    from docemb.errors import DocembError

    missing = [str(p) for p in [*args.models, *args.data] if not p.exists()]
    if missing:
        raise DocembError(f"not found: {', '.join(missing)}")
    report = benchmark(args.models, args.ref or args.models[0], args.data, args.threads, args.runs, args.warmup)
    paths = write_reports(report, args.out)
    env = report["environment"]
    print()
    print(terminal_table(report))
    print(
        f"\n{env['cpu']}, onnxruntime {env['onnxruntime']}, ai-edge-litert {env.get('ai_edge_litert') or '-'}, {env['threads']} thread(s), median of {env['runs']} runs; reports: {', '.join(map(str, paths))}"
    )
