"""Approximate nearest neighbours for large indices: an HNSW graph (USearch) over an index's
live rows, saved beside its shards, with its recall against exact search measured when built.

USearch was chosen by measurement over FAISS (docs/search.md): the same build time and
latency here, half the memory per vector with float16 storage, a 2 MB wheel, and one file that
can be memory-mapped. Exact search (docemb.index) stays the default.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from docemb.atomic import atomic_path, write_json
from docemb.errors import DocembError

ANN_FILE = "ann.usearch"
ANN_INFO = "ann.json"


@dataclass(frozen=True)
class AnnSettings:
    connectivity: int = 16  # graph edges per node
    expansion_add: int = 128  # candidates while building
    expansion_search: int = 128  # candidates while searching: recall against latency
    dtype: str = "f16"  # stored vectors: f32 | f16 | i8


@dataclass(frozen=True)
class AnnInfo:
    settings: AnnSettings
    rows: int  # live rows when built; a grown index needs a rebuild
    build_seconds: float
    bytes: int
    recall_at_10: float  # against exact search, on sampled rows as queries


def _usearch():
    try:
        from usearch.index import Index as UsearchIndex
    except ImportError:
        raise DocembError(
            "approximate search needs usearch: pip install -c constraints.txt usearch (make setup installs it)"
        ) from None
    return UsearchIndex


def build(
    folder: Path, vectors: np.ndarray, rows: np.ndarray, settings: AnnSettings = AnnSettings(), threads: int = 0
) -> AnnInfo:
    """An HNSW graph of `vectors` (keys: their index rows) written to `folder`; its recall@10
    against exact inner-product search is measured on up to 1,000 of the vectors as queries."""
    UsearchIndex = _usearch()
    started = time.perf_counter()
    graph = UsearchIndex(
        ndim=vectors.shape[1],
        metric="ip",
        dtype=settings.dtype,
        connectivity=settings.connectivity,
        expansion_add=settings.expansion_add,
        expansion_search=settings.expansion_search,
    )
    graph.add(rows.astype(np.uint64), np.ascontiguousarray(vectors, dtype=np.float32), threads=threads or os.cpu_count() or 1)
    seconds = time.perf_counter() - started
    with atomic_path(folder / ANN_FILE) as tmp:
        graph.save(str(tmp))
    info = AnnInfo(settings, len(rows), round(seconds, 2), (folder / ANN_FILE).stat().st_size, recall(graph, vectors, rows))
    write_json(folder / ANN_INFO, asdict(info))
    return info


def recall(graph, vectors: np.ndarray, rows: np.ndarray, k: int = 10, queries: int = 1000, seed: int = 0) -> float:
    """Share of the exact top-k that the graph returns, over sampled vectors used as queries."""
    pick = np.random.default_rng(seed).choice(len(vectors), min(queries, len(vectors)), replace=False)
    k = min(k, len(vectors))
    # the exact top-k as sets (order does not matter here), 100 queries at a time to bound memory
    exact = np.concatenate(
        [
            np.argpartition(-(vectors[part] @ vectors.T), k - 1, axis=1)[:, :k]
            for part in np.array_split(pick, -(-len(pick) // 100))
        ]
    )
    found = graph.search(np.ascontiguousarray(vectors[pick], dtype=np.float32), k).keys
    return float(np.mean([len(set(rows[e]) & set(f.tolist())) / k for e, f in zip(exact, found)]))


class Ann:
    """A built graph, searched like docemb.index.Index.search (scores, index rows)."""

    def __init__(self, folder: Path) -> None:
        path = folder / ANN_FILE
        if not path.is_file():
            raise DocembError(f"{folder}: no approximate index; build it with `docemb index ... --ann`")
        try:
            data = json.loads((folder / ANN_INFO).read_text())
            self.info = AnnInfo(**{**data, "settings": AnnSettings(**data["settings"])})
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DocembError(f"{folder / ANN_INFO}: unreadable ({exc})") from None
        self.graph = _usearch().restore(str(path), view=True)
        if self.graph is None:
            raise DocembError(f"{path}: not a USearch index")

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        matches = self.graph.search(np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32), k)
        keys = np.atleast_2d(matches.keys).astype(np.int64)
        return (1 - np.atleast_2d(matches.distances)).astype(np.float32), keys  # "ip" distance is 1 - dot
