"""`python -m docemb.benchmark.index_speed MODEL...`: how fast `docemb index` embeds a collection.

Collections are written once into `--work` (JPEG, from seeded crops of `--source` images):
images of 256-1024 pixels a side and 12-megapixel phone photos (4000x3000), each indexed with
and without `--fast-jpeg` (JPEG draft decoding), and with `--thumbs N` N thumbnails of 96x96
(STL-10's size: the published SimCLR account embedded its 100,000 unlabeled images at about 18
images/s on a GPU). Each model indexes each collection into a fresh index, as the command does
it (decode workers beside the inference threads), in a fresh process, so each row's peak
resident memory is its own; images/s is the rate over the whole run, index writing included.
`--engine local ray` also runs each on Ray Data (`docemb index --engine ray`, a local instance
started and stopped inside the run, so its start-up counts; its actors are not the run's child
processes, so the worker memory column covers the local engine only). `decode-only` is the local
engine with a model that costs nothing: the rate decoding and index writing alone allow.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from docemb.api import Model, load_model
from docemb.atomic import write_json
from docemb.bulk import Engine, build_index, decode_workers, embedding_dim, local_engine
from docemb.imageio import list_images, read_rgb
from docemb.ray_engine import RaySettings, ray_engine


@dataclass(frozen=True)
class Collection:
    name: str
    folder: Path
    count: int
    size: tuple[int, int]


@dataclass(frozen=True)
class SpeedRow:
    model: str
    collection: str
    fast_jpeg: bool
    threads: int  # inference threads
    engine: str
    images: int
    seconds: float
    images_per_s: float
    peak_rss_mb: float  # the indexing process
    worker_peak_rss_mb: float  # the largest decode worker


def write_collection(
    folder: Path, sources: list[np.ndarray], count: int, size: tuple[int, int], seed: int, smallest: int | None = None
) -> Collection:
    """`count` JPEGs of `size` (width, height), or with `smallest` of random sides from
    `smallest` to the size's: random crops of `sources`, resized. Kept between runs."""
    done = folder / "done"
    if not done.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        for i in tqdm(range(count), desc=f"writing {folder.name}", unit="img", leave=False):
            image = sources[int(rng.integers(len(sources)))]
            h, w = image.shape[:2]
            ch, cw = int(h * rng.uniform(0.4, 1)), int(w * rng.uniform(0.4, 1))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            shape = tuple(int(rng.integers(smallest, side + 1)) for side in size) if smallest else size
            crop = Image.fromarray(image[y : y + ch, x : x + cw]).resize(shape, Image.BILINEAR)
            crop.save(folder / f"{i:06d}.jpg", quality=90)
        done.write_text(str(count))
    return Collection(folder.name, folder, count, size)


def index_speed(
    model_path: Path, collection: Collection, fast_jpeg: bool, workers: int | None, threads: int = 1, engine: str = "local"
) -> SpeedRow:
    """One indexing run, in a fresh process (its peak memory is this run's)."""
    job = (model_path, collection, fast_jpeg, workers, threads, engine)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_index_once, *job).result()


def _index_once(
    model_path: Path, collection: Collection, fast_jpeg: bool, workers: int | None, threads: int, engine: str
) -> SpeedRow:
    model = load_model(model_path, threads=threads)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        report = build_index(
            model,
            [collection.folder],
            Path(out) / "index",
            workers=workers,
            fast_jpeg=fast_jpeg,
            engine=_engine(model, engine, threads, workers, fast_jpeg),
        )
        seconds = time.perf_counter() - started
    peak, workers_peak = (resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return SpeedRow(
        model_path.name,
        collection.name,
        fast_jpeg,
        threads,
        engine,
        report.embedded,
        seconds,
        report.embedded / seconds,
        peak,
        workers_peak,
    )


def _engine(model: Model, engine: str, threads: int, workers: int | None, fast_jpeg: bool) -> Engine | None:
    if engine == "ray":
        return ray_engine(model.path, threads, 64, fast_jpeg, RaySettings())
    if engine == "decode-only":
        dim = embedding_dim(model)
        free = dataclasses.replace(model, run=lambda batch: np.zeros((len(batch), dim), np.float32))
        return local_engine(free, 64, workers, fast_jpeg)
    return None  # build_index's own local engine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported .onnx/.tflite files (contracts beside them)")
    parser.add_argument("--source", type=Path, required=True, help="images the collections are cropped from")
    parser.add_argument("--small", type=int, default=10000, help="images of 256-1024 px a side (default: 10000; 0: none)")
    parser.add_argument("--photos", type=int, default=300, help="4000x3000 photos (default: 300; 0: none)")
    parser.add_argument("--thumbs", type=int, default=0, help="96x96 thumbnails, as STL-10's (default: none)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "docemb-index-speed")
    parser.add_argument("--workers", type=int, help="decoding processes (default: as `docemb index`, one per core)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="inference threads to try (default: 1)")
    parser.add_argument(
        "--engine", nargs="+", choices=["local", "ray", "decode-only"], default=["local"], help="engines to run (default: local)"
    )
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--clean", action="store_true", help="delete the collections afterwards")
    args = parser.parse_args(argv)
    sources = [read_rgb(p, max_side=4000) for p in list_images(args.source)[:40]]
    runs = []
    if args.small:
        small = write_collection(args.work / f"jpeg_256-1024_{args.small}", sources, args.small, (1024, 1024), 0, 256)
        runs += [(small, False), (small, True)]
    if args.photos:
        photos = write_collection(args.work / f"photos_4000x3000_{args.photos}", sources, args.photos, (4000, 3000), 1)
        runs += [(photos, False), (photos, True)]
    if args.thumbs:
        small_sources = [read_rgb(p, max_side=384) for p in list_images(args.source)[:40]]  # cheap crops to resize
        thumbs = write_collection(args.work / f"thumbs_96x96_{args.thumbs}", small_sources, args.thumbs, (96, 96), 2)
        runs.append((thumbs, False))
    rows = [
        index_speed(model, collection, fast, args.workers, threads, engine)
        for model in args.models
        for threads in args.threads
        for engine in args.engine
        for collection, fast in runs
    ]
    print(
        f"{'model':<28} {'collection':<24} {'fast-jpeg':>9} {'threads':>7} {'engine':>6} {'images':>7} {'s':>7} {'images/s':>9}"
        f" {'peak MB':>8} {'worker MB':>9}"
    )
    for r in rows:
        print(
            f"{r.model:<28} {r.collection:<24} {str(r.fast_jpeg):>9} {r.threads:>7} {r.engine:>6} {r.images:>7} {r.seconds:7.1f}"
            f" {r.images_per_s:9.0f} {r.peak_rss_mb:8.0f} {r.worker_peak_rss_mb:9.0f}"
        )
    print(f"{os.cpu_count()} cores; decode workers: {decode_workers(args.workers)}")
    if args.out:
        write_json(args.out, {"rows": [asdict(r) for r in rows], "cores": os.cpu_count()})
    if args.clean:
        shutil.rmtree(args.work)


if __name__ == "__main__":
    main()
