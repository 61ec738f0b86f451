"""`docemb search QUERY... --index INDEX -k K`: the most similar images of an indexed collection."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from docemb.errors import DocembError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="+", help="query images or PDFs (a page each), or paths already in the index")
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--model", type=Path, help="the index's model, to embed query images that are not in the index")
    parser.add_argument("-k", type=int, default=10, help="results per query (default: 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--grid", type=Path, help="write a PNG of each query with its top k")
    parser.add_argument("--ann", action="store_true", help="search the approximate index built by `docemb index --ann`")


def query_vectors(queries: list[str], index, model_path: Path | None) -> np.ndarray:
    """Rows of queries already in the index are read from it; other files are embedded."""
    rows = {path: row for row, path in ((r, index.path(r)) for r in np.flatnonzero(index.live))}
    known = [str(Path(q)) in rows for q in queries]
    vectors = np.zeros((len(queries), index.meta.dim), dtype=np.float32)
    if any(known):
        picks = [rows[str(Path(q))] for q, k in zip(queries, known) if k]
        vectors[np.array(known)] = index.vectors(np.array(picks))
    if not all(known):
        from docemb.api import load_model

        if model_path is None:
            raise DocembError(f"{queries[known.index(False)]}: not in the index; pass --model to embed it")
        model = load_model(model_path)
        if model.sha256 != index.meta.model_sha256:
            raise DocembError(f"{model_path}: not the model {index.meta.model_name} that built {index.folder}")
        vectors[~np.array(known)] = model.embed([q for q, k in zip(queries, known) if not k])
    return vectors


def run(args: argparse.Namespace) -> None:
    from docemb.imageio import expand_pdfs
    from docemb.index import Index

    index = Index.open(args.index)
    names = expand_pdfs(args.queries)[0]
    queries = query_vectors(names, index, args.model)
    if args.ann:
        from docemb.ann import Ann

        graph = Ann(args.index)
        if graph.info.rows != len(index):
            raise DocembError(
                f"{args.index}: the approximate index holds {graph.info.rows} of {len(index)} images; run `docemb index --ann` again"
            )
        scores, rows = graph.search(queries, args.k)
    else:
        scores, rows = index.search(queries, args.k)
    results = [
        {"query": q, "results": [{"path": index.path(int(r)), "score": float(s)} for s, r in zip(score_row, row)]}
        for q, score_row, row in zip(names, scores, rows)
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
