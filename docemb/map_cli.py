"""`docemb map --index INDEX --out map.png [--html map.html]`: a 2-D map of the collection,
coloured by folder or by a label column, with thumbnails on hover in the HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="PNG of the map")
    parser.add_argument("--html", type=Path, help="also a self-contained HTML page with thumbnails on hover")
    parser.add_argument("--labels", type=Path, help="CSV with a path (or name) column and a label column to colour by")
    parser.add_argument("--label-column", default="label", help="the CSV's column to colour by (default: label)")
    parser.add_argument(
        "--max-points", type=int, default=20000, help="images mapped, a seeded sample of larger indices (default: 20000)"
    )
    parser.add_argument("--thumbnails", type=int, default=2000, help="points with a thumbnail in the HTML (default: 2000)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    from docemb import plots
    from docemb.collection_map import folder_groups, label_groups, layout, write_html
    from docemb.index import Index

    index = Index.open(args.index)
    rows = np.flatnonzero(index.live)
    if len(rows) > args.max_points:
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.max_points, replace=False))
    paths = [index.path(int(r)) for r in rows]
    groups = label_groups(paths, args.labels, args.label_column) if args.labels else folder_groups(paths)
    xy = layout(index.vectors(rows), seed=args.seed)
    title = f"{args.index.name}: {len(rows)} of {len(index)} images"
    print(f"wrote {plots.collection_map(xy, groups, args.out, title)}")
    if args.html:
        print(f"wrote {write_html(xy, groups, paths, args.html, args.thumbnails, title)}")
