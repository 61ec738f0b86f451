"""`python -m docemb.benchmark.neighbours MODEL --data FOLDER...`: how often an image's nearest
neighbours in a collection are of its own kind, for the search job (query -> top-k similar).

Each folder's `manifest.csv` labels its images: the generated documents by `family` (a design
and its variants), `realdocs` by kind (card or page) and by source document (a manual's page 1
and page 2). Every labelled image queries all the others (itself left out); precision@k is the
share of its k nearest that carry its label, averaged over images whose label has another
member; `ceiling` is the best precision@k the label sizes allow.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from docemb.api import load_model
from docemb.atomic import write_json
from docemb.benchmark.quality import manifest_rows
from docemb.errors import DocembError
from docemb.imageio import list_images, read_rgb

KS = (1, 5, 10)


@dataclass(frozen=True)
class NeighbourRow:
    collection: str
    label: str
    queries: int
    k: int
    precision: float
    ceiling: float


def labelled(folder: Path) -> tuple[list[Path], dict[str, list[str]]]:
    """The folder's images and, per label kind, each image's label, from its manifest.csv."""
    found = manifest_rows(folder)
    if found is None:
        raise DocembError(f"{folder}: no manifest.csv here or in the two folders above to label its images")
    manifest, rows = found
    names = {path.stem: path for path in list_images(folder)}
    rows = [row for row in rows if Path(row["name"]).stem in names]
    if not rows:
        raise DocembError(f"{manifest}: labels none of the images in {folder}")
    labels = {}
    if "family" in rows[0]:
        labels["family"] = [row["family"] for row in rows]
    if "source" in rows[0]:
        labels["kind"] = [row["kind"] for row in rows]
        labels["source document"] = [row["source"].split("#")[0] for row in rows]
    return [names[Path(row["name"]).stem] for row in rows], labels


def precision_at_k(embeddings: np.ndarray, labels: list[str], ks: tuple[int, ...] = KS) -> list[tuple[int, int, float, float]]:
    """(k, queries, precision@k, ceiling) over images whose label has another member."""
    scores = embeddings @ embeddings.T
    np.fill_diagonal(scores, -np.inf)
    order = np.argsort(-scores, axis=1)
    label_array = np.asarray(labels)
    sizes = Counter(labels)
    queries = np.array([sizes[label] > 1 for label in labels])
    out = []
    for k in ks:
        nearest = order[:, : min(k, len(labels) - 1)]  # itself sorts last; never among the k
        hits = (label_array[nearest] == label_array[:, None]).sum(axis=1) / k
        ceiling = np.array([min(k, sizes[label] - 1) / k for label in labels])
        out.append((k, int(queries.sum()), float(hits[queries].mean()), float(ceiling[queries].mean())))
    return out


def benchmark(model_path: Path, folders: list[Path]) -> list[NeighbourRow]:
    model = load_model(model_path)
    rows = []
    for folder in folders:
        paths, labels = labelled(folder)
        embeddings = model.embed([read_rgb(p, max_side=1024) for p in paths])
        name = f"{folder.parent.name}/{folder.name}"
        for label, values in labels.items():
            rows += [NeighbourRow(name, label, n, k, p, c) for k, n, p, c in precision_at_k(embeddings, values)]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="image folders with a manifest.csv")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        rows = benchmark(args.model, args.data)
    except DocembError as exc:
        raise SystemExit(f"neighbours: error: {exc}") from None
    print(f"{'collection':<24} {'label':<16} {'queries':>7} {'k':>3} {'precision':>9} {'ceiling':>8}")
    for r in rows:
        print(f"{r.collection:<24} {r.label:<16} {r.queries:>7} {r.k:>3} {r.precision:9.3f} {r.ceiling:8.3f}")
    if args.out:
        write_json(args.out, [asdict(r) for r in rows])


if __name__ == "__main__":
    main()
