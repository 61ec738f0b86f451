"""`docemb search QUERY... --index INDEX... -k K`: the most similar images of indexed collections.

Several indexes of one model (a collection split into parts, each with its own approximate
graph) are searched one after another and their top k merged: the answer of one index of all.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from docemb.errors import DocembError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="+", help="query images or PDFs (a page each), or paths already in the index")
    parser.add_argument("--index", required=True, type=Path, nargs="+", help="one index, or several built with one model")
    parser.add_argument("--model", type=Path, help="the index's model, to embed query images that are not in the index")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--grid", type=Path, help="write a PNG of each query with its top k")
    parser.add_argument("--ann", action="store_true", help="search the approximate index built by `docemb index --ann`")


def open_indexes(folders: list[Path]):
    """The indexes, refused unless one model built them all (scores of two models do not compare)."""
    from docemb.index import Index

    indexes = [Index.open(folder) for folder in folders]
    for other in indexes[1:]:
        if other.meta.model_sha256 != indexes[0].meta.model_sha256:
            raise DocembError(
                f"{other.folder} was built with {other.meta.model_name}, {indexes[0].folder} with "
                f"{indexes[0].meta.model_name}: search indexes of one model together"
            )
    return indexes


def query_vectors(queries: list[str], indexes: list, model_path: Path | None) -> np.ndarray:
    """Rows of queries already in an index are read from it; other files are embedded."""
    vectors = np.zeros((len(queries), indexes[0].meta.dim), dtype=np.float32)
    known = np.zeros(len(queries), dtype=bool)
    for index in indexes:
        if known.all():
            break  # the rest of the indexes need not list their paths
        rows = {path: row for row, path in ((r, index.path(r)) for r in np.flatnonzero(index.live))}
        found = [i for i, q in enumerate(queries) if not known[i] and str(Path(q)) in rows]
        if found:
            vectors[found] = index.vectors(np.array([rows[str(Path(queries[i]))] for i in found]))
            known[found] = True
    if not known.all():
        from docemb.api import load_model

        missing = [q for q, k in zip(queries, known) if not k]
        if model_path is None:
            raise DocembError(f"{missing[0]}: not in the index; pass --model to embed it")
        model = load_model(model_path)
        if model.sha256 != indexes[0].meta.model_sha256:
            raise DocembError(f"{model_path}: not the model {indexes[0].meta.model_name} that built {indexes[0].folder}")
        vectors[~known] = model.embed(missing)
    return vectors


def search_one(index, queries: np.ndarray, k: int, ann: bool) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of one index, exact or through its approximate graph."""
    if not ann:
        return index.search(queries, k)
    from docemb.ann import Ann

    graph = Ann(index.folder)
    if graph.info.rows != len(index):
        raise DocembError(
            f"{index.folder}: the approximate index holds {graph.info.rows} of {len(index)} images; run `docemb index --ann` again"
        )
    return graph.search(queries, k)


def merged_top_k(found: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each index's (scores, rows) merged: (scores, which index, rows), each (Q, <= k), best first."""
    scores = np.concatenate([s for s, _ in found], axis=1)
    rows = np.concatenate([r for _, r in found], axis=1)
    source = np.concatenate([np.full(r.shape, i) for i, (_, r) in enumerate(found)], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return tuple(np.take_along_axis(a, order, axis=1) for a in (scores, source, rows))


def run(args: argparse.Namespace) -> None:
    from docemb.imageio import expand_pdfs

    indexes = open_indexes(args.index)
    names = expand_pdfs(args.queries)[0]
    queries = query_vectors(names, indexes, args.model)
    scores, sources, rows = merged_top_k([search_one(index, queries, args.k, args.ann) for index in indexes], args.k)
    results = [
        {
            "query": q,
            "results": [{"path": indexes[i].path(int(r)), "score": float(s)} for s, i, r in zip(score_row, source_row, row)],
        }
        for q, score_row, source_row, row in zip(names, scores, sources, rows)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["query"])
            for rank, hit in enumerate(result["results"], 1):
                print(f"  {rank:>3}  {hit['score']:.4f}  {hit['path']}")
    if args.grid:
        from docemb.plots import query_grid

        query_grid(
            [(r["query"], [h["path"] for h in r["results"]], [h["score"] for h in r["results"]]) for r in results], args.grid
        )
        print(f"wrote {args.grid}")
