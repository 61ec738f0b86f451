"""`python -m docemb.benchmark.search [--n 1000000]`: search speed over a large index.

An index of N clustered unit vectors (256-d, float16 storage, as `docemb index` writes) is
searched exactly (docemb.index: chunked matmul) for one query and for batches of 100, against
the per-row `np.apply_along_axis` cosine ranking of a published account (over 100,000 rows),
and approximately (docemb.ann: HNSW) at several search widths, with recall@10 against exact,
build time and bytes per vector. The vectors are synthetic (clusters plus noise, so that
neighbours exist); timings do not depend on what the vectors mean.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from docemb.ann import Ann, build, recall
from docemb.index import FileStamp, Index, IndexMeta, IndexWriter


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 10000, noise: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 65536):
        size = min(65536, n - start)
        block = centres[rng.integers(0, clusters, size)] + noise * rng.normal(size=(size, dim)).astype(np.float32)
        out[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def write_index(folder: Path, vectors: np.ndarray, shard: int = 65536) -> Index:
    writer = IndexWriter(folder, IndexMeta("synthetic", "0" * 64, vectors.shape[1], "float16"))
    for start in range(0, len(vectors), shard):
        stamps = [FileStamp(f"v{i}", 0, 0) for i in range(start, min(start + shard, len(vectors)))]
        writer.write_shard(vectors[start : start + shard], stamps)
    return Index.open(folder)


def _ms(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def per_row_ranking(vectors: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    """The published way: a Python cosine per row through np.apply_along_axis, then a sort."""
    scores = np.apply_along_axis(lambda row: float(row @ query / (np.linalg.norm(row) * np.linalg.norm(query))), 1, vectors)
    return np.argsort(-scores)[:k]


def run(n: int, dim: int, widths: list[int]) -> list[str]:
    vectors = clustered(n, dim)
    queries = clustered(100, dim, seed=1)
    lines = [f"{n:,} x {dim} vectors, float16 storage ({2 * dim} bytes per vector)"]
    with tempfile.TemporaryDirectory() as work:
        index = write_index(Path(work), vectors)
        one = _ms(lambda: index.search(queries[:1], 10))
        batch = _ms(lambda: index.search(queries, 10), repeats=3) / len(queries)
        lines.append(f"exact top-10: {one:.1f} ms for one query, {batch:.2f} ms per query in batches of 100")
        sub = min(n, 100_000)
        published = _ms(lambda: per_row_ranking(vectors[:sub], queries[0]), repeats=1)
        exact_sub = _ms(lambda: np.argsort(-(vectors[:sub] @ queries[0]))[:10])
        lines.append(
            f"over {sub:,}: per-row apply_along_axis {published:.0f} ms per query; one matmul and sort {exact_sub:.1f} ms"
        )
        stored, rows = index.vectors(), np.flatnonzero(index.live)
        info = build(Path(work), stored, rows)
        graph = Ann(Path(work))
        lines.append(f"HNSW (USearch, f16): built in {info.build_seconds:.0f} s, {info.bytes / n:.0f} bytes per vector")
        for width in widths:
            graph.graph.expansion_search = width
            latency = _ms(lambda: [graph.search(q, 10) for q in queries], repeats=3) / len(queries)
            found = recall(graph.graph, stored, rows)
            lines.append(f"  expansion_search {width}: {latency:.3f} ms per query, recall@10 {found:.3f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args(argv)
    for line in run(args.n, args.dim, args.widths):
        print(line, flush=True)


if __name__ == "__main__":
    main()
