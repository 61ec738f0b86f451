"""Embedding a whole collection into an index: decoding in worker processes, the model in this one.

Files are decoded and resized to the model's input in a process pool while the model runs on
the previous batch; finished rows go to the index a shard at a time, so a killed run loses at
most one shard of work and a second run embeds only what is new or changed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from docemb.api import Model
from docemb.errors import DocembError, ImageReadError
from docemb.imageio import IMAGE_SUFFIXES, SKIP_HINT, OnError, expand_pdfs, image_files, read_rgb
from docemb.index import FileStamp, IndexWriter, pending
from docemb.pdf import is_pdf_page
from docemb.preprocess import Preprocessing

DECODE_WINDOW = 2048  # decoded images in flight at most: 100 MB at 128 px
DecodeJob = tuple[str, Preprocessing, bool]  # path, the model's preprocessing, fast JPEG decoding


@dataclass
class IndexReport:
    """What one `docemb index` run did."""

    embedded: int = 0
    skipped_unchanged: int = 0
    bad: list[str] = field(default_factory=list)  # "path: reason" of files that could not be read
    shards: list[str] = field(default_factory=list)


def collect_files(roots: list[Path], on_error: OnError = "raise") -> tuple[list[str], list[str]]:
    """Image files and PDF pages under the given folders (recursive) and files, sorted, each
    once; and "path: reason" for each PDF that cannot be opened (with on_error="skip")."""
    files: set[Path] = set()
    for root in roots:
        if root.is_file():
            files.add(root)
        elif root.is_dir():
            files.update(image_files(root, IMAGE_SUFFIXES + (".pdf",)))
        else:
            raise DocembError(f"{root}: no such file or folder")
    try:
        names, bad = expand_pdfs(sorted(files), on_error)
    except ImageReadError as exc:
        raise DocembError(f"{exc}; {SKIP_HINT}") from None
    if not names and not bad:
        raise DocembError(f"no images under {', '.join(map(str, roots))} (looked for {', '.join(IMAGE_SUFFIXES)}, .pdf)")
    return names, bad


def decode_job(job: DecodeJob) -> tuple[str, np.ndarray | None, str | None]:
    """(path, the model-size uint8 image as the contract resizes it, or None and why not);
    `fast_jpeg` decodes large JPEGs at a reduced scale, no smaller than twice the input; PDF
    pages are rendered at four times the input, which the resize then antialiases."""
    path, preprocessing, fast_jpeg = job
    try:
        draft = 2 * preprocessing.size if fast_jpeg else None
        image = read_rgb(path, max_side=4 * preprocessing.size if is_pdf_page(path) else None, jpeg_draft=draft)
        return path, preprocessing.resize(image), None
    except ImageReadError as exc:
        return path, None, str(exc)


@dataclass
class Embedded:
    """A batch an engine hands back: the rows it embedded, in the order of their paths, and
    "path: reason" for each file of the batch it could not read."""

    paths: list[str]
    embeddings: np.ndarray
    errors: list[str]


Engine = Callable[[list[str]], Generator[Embedded, None, None]]  # files to embed -> their batches, in order


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
    engine: Engine | None = None,
) -> IndexReport:
    """Embed every new or changed image under `roots` into the index at `out`, by `engine`
    (default: decoding in `workers` processes here, the model in this one)."""
    files, bad_pdfs = collect_files(roots, "skip" if skip_bad else "raise")
    writer = IndexWriter.open_or_create(out, model.name, model.sha256, embedding_dim(model), storage)
    todo = pending(files, writer.known)
    report = IndexReport(skipped_unchanged=len(files) - len(todo), bad=bad_pdfs)
    shard = _ShardBuffer(writer, report, shard_size)
    engine = engine or local_engine(model, batch_size, workers, fast_jpeg)
    with tqdm(total=len(todo), desc="index", unit="img", smoothing=0.1) as bar, closing(engine(todo)) as batches:
        for batch in batches:
            shard.add(batch)
            bar.update(len(batch.paths) + len(batch.errors))
            if batch.errors and not skip_bad:
                shard.flush()  # what is done stays done
                raise DocembError(f"{batch.errors[0]}; {SKIP_HINT}")
            report.bad.extend(batch.errors)
        shard.flush()
    return report


@dataclass
class _ShardBuffer:
    """Embedded rows waiting for their shard: written `size` rows at a time, the rest on flush."""

    writer: IndexWriter
    report: IndexReport
    size: int
    rows: list[np.ndarray] = field(default_factory=list)
    stamps: list[FileStamp] = field(default_factory=list)

    def add(self, batch: Embedded) -> None:
        self.rows.append(batch.embeddings)
        self.stamps.extend(FileStamp.of(path) for path in batch.paths)
        while len(self.stamps) >= self.size:
            self._write(self.size)

    def flush(self) -> None:
        if self.stamps:
            self._write(len(self.stamps))

    def _write(self, count: int) -> None:
        rows = np.concatenate(self.rows)
        self.report.shards.append(self.writer.write_shard(rows[:count], self.stamps[:count]))
        self.report.embedded += count
        self.rows, self.stamps = [rows[count:]], self.stamps[count:]


def local_engine(model: Model, batch_size: int = 64, workers: int | None = None, fast_jpeg: bool = False) -> Engine:
    """Decoding and resizing in a pool of `workers` processes while `model` embeds here."""

    def run(todo: list[str]) -> Generator[Embedded, None, None]:
        jobs = [(path, model.preprocessing, fast_jpeg) for path in todo]
        no_rows = np.zeros((0, embedding_dim(model)), np.float32)  # a batch of unreadable files only
        paths: list[str] = []
        images: list[np.ndarray] = []
        with multiprocessing.get_context("fork").Pool(decode_workers(workers)) as pool:
            for path, image, error in _decoded(pool, jobs):
                if image is not None:
                    paths.append(path)
                    images.append(image)
                if paths and (error is not None or len(paths) == batch_size):
                    yield Embedded(paths, model.embed_resized(np.stack(images)), [error] if error else [])
                    paths, images = [], []
                elif error is not None:
                    yield Embedded([], no_rows, [error])
            if paths:
                yield Embedded(paths, model.embed_resized(np.stack(images)), [])

    return run


def _decoded(
    pool: Pool, jobs: list[DecodeJob], window: int = DECODE_WINDOW
) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """decode_job's results in order, a window of jobs at a time: Pool.imap alone runs ahead of
    the model and keeps every decoded image it has not yet been asked for (100,000 thumbnails
    held 3.5 GB), a window holds at most `window` of them."""
    for start in range(0, len(jobs), window):
        yield from pool.imap(decode_job, jobs[start : start + window], chunksize=16)


def decode_workers(workers: int | None) -> int:
    """`workers`, or one per core: decoding, not the model, bounds photo-sized images."""
    return workers or os.cpu_count() or 1


def embedding_dim(model: Model) -> int:
    size = model.preprocessing.size
    return int(model.embed_resized(np.zeros((1, size, size, 3), np.uint8)).shape[1])
