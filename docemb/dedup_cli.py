"""`docemb dedup --index INDEX`: groups of near-duplicate images, as CSV or JSON and a contact sheet.

Each image is linked to every neighbour (among its top `--neighbours`) scoring at least
`--threshold`; a group is a connected set of links (union-find), so a chain of near-copies ends
in one group.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def duplicate_groups(scores: np.ndarray, rows: np.ndarray, query_rows: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected groups (of two or more rows) of the links `query_rows[i] -- rows[i, j]` with
    `scores[i, j] >= threshold`; each group sorted, groups largest first."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for query, score_row, row in zip(query_rows, scores, rows):
        for score, other in zip(score_row, row):
            if other != query and score >= threshold:
                parent[find(int(query))] = find(int(other))
    groups: dict[int, list[int]] = {}
    for member in parent:
        groups.setdefault(find(member), []).append(member)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def as_cosines(scores: np.ndarray, rows: np.ndarray, live: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Dot products of stored rows as cosines. Storage rounding moves a row's norm off 1, so an
    exact copy can score under 1 against its original: under a strict threshold for some rows."""
    norms = np.linalg.norm(vectors, axis=1)
    found = np.minimum(np.searchsorted(live, rows), len(live) - 1)  # past the live rows a score is -inf anyway
    return scores / np.maximum(norms[:, None] * norms[found], 1e-12)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument(
        "--threshold", type=float, default=0.95, help="cosine at or above which two images are near-duplicates (default: 0.95)"
    )
    parser.add_argument("--neighbours", type=int, default=10, help="neighbours looked at per image (default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of CSV (group, path, score to the group's first)")
    parser.add_argument("--sheet", type=Path, help="write a contact sheet PNG of the largest groups")


def run(args: argparse.Namespace) -> None:
    from docemb.index import Index

    index = Index.open(args.index)
    live = np.flatnonzero(index.live)
    live_vectors = index.vectors(live)  # decoded once: Index.vectors walks every shard

    def vectors_of(group: list[int]) -> np.ndarray:
        return live_vectors[np.searchsorted(live, group)]

    scores, rows = index.search(live_vectors, args.neighbours + 1)
    scores = as_cosines(scores, rows, live, live_vectors)
    groups = duplicate_groups(scores, rows, live, args.threshold)
    records = []
    for number, group in enumerate(groups):
        vectors = vectors_of(group)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # cosines, as the threshold compares
        for row, vector in zip(group, vectors):
            records.append({"group": number, "path": index.path(row), "score_to_first": float(vector @ vectors[0])})
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=["group", "path", "score_to_first"])
        writer.writeheader()
        writer.writerows(records)
    print(f"{len(groups)} group(s) of near-duplicates among {len(live)} images (threshold {args.threshold})", file=sys.stderr)
    if args.sheet and groups:
        from docemb.plots import query_grid

        shown = []
        for group in groups[:12]:
            vectors = vectors_of(group[:8])
            shown.append(
                (index.path(group[0]), [index.path(r) for r in group[1:8]], [float(s) for s in vectors[1:] @ vectors[0]])
            )
        query_grid(shown, args.sheet, first="group")
        print(f"wrote {args.sheet}", file=sys.stderr)
