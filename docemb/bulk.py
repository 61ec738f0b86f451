"""Embedding a whole collection into an index: decoding in worker processes, the model in this one.

Files are decoded and resized to the model's input in a process pool while the model runs on
the previous batch; finished rows go to the index a shard at a time, so a killed run loses at
most one shard of work and a second run embeds only what is new or changed.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.api import Model
from docemb.errors import DocembError, ImageReadError
from docemb.imageio import IMAGE_SUFFIXES, image_files, read_rgb
from docemb.index import FileStamp, IndexWriter, pending
from docemb.preprocess import Preprocessing


@dataclass
class IndexReport:
    """What one `docemb index` run did."""

    embedded: int = 0
    skipped_unchanged: int = 0
    bad: list[str] = field(default_factory=list)  # "path: reason" of files that could not be read
    shards: list[str] = field(default_factory=list)


def collect_files(roots: list[Path]) -> list[Path]:
    """Image files under the given folders (recursive) and files, sorted, each once."""
    files: set[Path] = set()
    for root in roots:
        if root.is_file():
            files.add(root)
        elif root.is_dir():
            files.update(image_files(root))
        else:
            raise DocembError(f"{root}: no such file or folder")
    if not files:
        raise DocembError(f"no images under {', '.join(map(str, roots))} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return sorted(files)


def _decode_job(job: tuple[str, Preprocessing, bool]) -> tuple[str, np.ndarray | None, str | None]:
    """(path, the model-size uint8 image as the contract resizes it, or None and why not);
    `fast_jpeg` decodes large JPEGs at a reduced scale, no smaller than twice the input."""
    path, preprocessing, fast_jpeg = job
    try:
        return path, preprocessing.resize(read_rgb(path, jpeg_draft=2 * preprocessing.size if fast_jpeg else None)), None
    except ImageReadError as exc:
        return path, None, str(exc)


def build_index(
    model: Model,
    roots: list[Path],
    out: Path,
    storage: str = "float16",
    batch_size: int = 64,
    shard_size: int = 8192,
    workers: int | None = None,
    skip_bad: bool = False,
    fast_jpeg: bool = False,
) -> IndexReport:
    """Embed every new or changed image under `roots` into the index at `out`."""
    files = collect_files(roots)
    writer = IndexWriter.open_or_create(out, model.name, model.sha256, _dim(model), storage)
    todo = pending(files, writer.known)
    report = IndexReport(skipped_unchanged=len(files) - len(todo))
    rows: list[np.ndarray] = []
    stamps: list[FileStamp] = []
    batch: list[tuple[str, np.ndarray]] = []

    def flush_batch() -> None:
        if batch:
            rows.append(model.embed_resized(np.stack([image for _, image in batch])))
            stamps.extend(FileStamp.of(Path(path)) for path, _ in batch)
            batch.clear()

    def flush_shard() -> None:
        flush_batch()
        if stamps:
            report.shards.append(writer.write_shard(np.concatenate(rows), list(stamps)))
            report.embedded += len(stamps)
            rows.clear()
            stamps.clear()

    jobs = [(str(path), model.preprocessing, fast_jpeg) for path in todo]
    with multiprocessing.get_context("fork").Pool(decode_workers(workers)) as pool:
        bar = tqdm(pool.imap(_decode_job, jobs, chunksize=16), total=len(jobs), desc="index", unit="img", smoothing=0.1)
        for path, image, error in bar:
            if image is None:
                if not skip_bad:
                    flush_shard()  # what is done stays done
                    raise DocembError(
                        f"{path}: not a readable image ({error}); pass --skip-bad-images to list and skip such files"
                    )
                report.bad.append(f"{path}: {error}")
                continue
            batch.append((path, image))
            if len(batch) == batch_size:
                flush_batch()
            if len(stamps) + len(batch) >= shard_size:
                flush_shard()
        flush_shard()
    return report


def decode_workers(workers: int | None) -> int:
    """`workers`, or one per core: decoding, not the model, bounds photo-sized images."""
    return workers or os.cpu_count() or 1


def _dim(model: Model) -> int:
    size = model.preprocessing.size
    return int(model.embed_resized(np.zeros((1, size, size, 3), np.uint8)).shape[1])
