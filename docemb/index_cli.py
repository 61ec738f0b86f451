"""`docemb index FOLDER... --model MODEL --out INDEX`: embed a collection, resumably."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("roots", nargs="+", type=Path, help="folders (recursive), image files and PDFs (a page each) to embed")
    parser.add_argument(
        "--model", required=True, type=Path, help="an exported .onnx/.tflite (contract beside it) or a .safetensors checkpoint"
    )
    parser.add_argument("--out", required=True, type=Path, help="index folder (created, or continued when it exists)")
    parser.add_argument(
        "--storage", choices=["float16", "int8"], default="float16", help="how embeddings are stored (default: float16)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=8192, help="rows per shard: the most a kill can lose")
    parser.add_argument("--workers", type=int, help="decoding processes of the local engine (default: one per core)")
    parser.add_argument(
        "--threads", type=int, default=1, help="inference threads (default: 1; docs/search.md measures the split)"
    )
    parser.add_argument("--skip-bad-images", action="store_true", help="list unreadable files in the report and go on")
    parser.add_argument(
        "--fast-jpeg", action="store_true", help="decode large JPEGs at a reduced scale (faster; pixels differ slightly)"
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: decoding processes and the model here; ray: actors on Ray Data (a cluster, or one started here)",
    )
    parser.add_argument("--ray-address", help="the Ray cluster to join (default: RAY_ADDRESS, else start one on this machine)")
    parser.add_argument("--ray-actors", type=int, help="Ray actors, each with the model loaded once (default: one per CPU)")
    parser.add_argument(
        "--ann",
        action="store_true",
        help="also build an approximate (HNSW) index for `docemb search --ann`, its recall against exact printed",
    )


def run(args: argparse.Namespace) -> None:
    from docemb.api import load_model
    from docemb.atomic import write_json
    from docemb.bulk import build_index
    from docemb.lock import output_lock

    model = load_model(args.model, threads=args.threads)
    engine = None
    if args.engine == "ray":
        from docemb.ray_engine import RaySettings, ray_engine

        engine = ray_engine(
            args.model, args.threads, args.batch_size, args.fast_jpeg, RaySettings(args.ray_address, args.ray_actors)
        )
    started = time.perf_counter()
    with output_lock(args.out):
        report = build_index(
            model,
            args.roots,
            args.out,
            args.storage,
            args.batch_size,
            args.shard_size,
            args.workers,
            args.skip_bad_images,
            args.fast_jpeg,
            engine,
        )
        seconds = time.perf_counter() - started
        write_json(args.out / "report.json", {**asdict(report), "seconds": round(seconds, 2), "model": str(args.model)})
        if args.ann:
            _build_ann(args.out)
    rate = report.embedded / max(seconds, 1e-9)
    print(
        f"{args.out}: embedded {report.embedded} ({rate:.0f} images/s), {report.skipped_unchanged} unchanged, {len(report.bad)} unreadable"
    )
    for line in report.bad[:10]:
        print(f"  skipped {line}")


def _build_ann(folder: Path) -> None:
    import numpy as np

    from docemb import ann
    from docemb.index import Index

    index = Index.open(folder)
    rows = np.flatnonzero(index.live)
    info = ann.build(folder, index.vectors(rows), rows)
    print(
        f"{folder / ann.ANN_FILE}: {info.rows} vectors in {info.build_seconds:.1f} s, {info.bytes / info.rows:.0f} bytes each, "
        f"recall@10 against exact {info.recall_at_10:.3f}"
    )
