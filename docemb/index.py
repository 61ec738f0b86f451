"""An embedding index of an image collection: shards written atomically, searched exactly.

Layout of an index folder:
- `index.json`: the model (name, sha256, size), storage, and the finished shards in order;
- `shard-NNNNN.npy`: embeddings, float16, or int8 with `shard-NNNNN.scale.npy` (one scale per row);
- `shard-NNNNN.csv`: path, size and mtime of each row's file (a PDF page's path is
  `FILE.pdf#page=N`, its size and mtime the PDF's).

A shard is complete once `index.json` lists it (each file is renamed into place first), so a
killed run leaves at most an unlisted shard that the next run overwrites. A file indexed again
(changed size or mtime) is embedded into a later shard, and the later row wins.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from docemb.atomic import FILE_NAME_ERRORS, atomic_path, write_json
from docemb.errors import DocembError
from docemb.pdf import split_page_name

FORMAT_VERSION = 1
STORAGES = ("float16", "int8")
CACHE_BYTES = 2 << 30  # search holds an index decoded in memory up to this size (Index.warm)


@dataclass(frozen=True)
class FileStamp:
    """What says a file is unchanged since it was embedded."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileStamp:
        """The stamp of an image file, or of a PDF page by its PDF file."""
        stat = Path(split_page_name(str(path))[0]).stat()
        return cls(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass
class IndexMeta:
    model_name: str
    model_sha256: str
    dim: int
    storage: str = "float16"
    shards: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION


def encode(embeddings: np.ndarray, storage: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows as stored: float16, or int8 with a per-row scale (max |value| / 127)."""
    if storage == "float16":
        return embeddings.astype(np.float16), None
    scale = np.maximum(np.abs(embeddings).max(axis=1), 1e-12) / 127
    return np.round(embeddings / scale[:, None]).astype(np.int8), scale.astype(np.float32)


def decode(stored: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    rows = stored.astype(np.float32)
    return rows * scale[:, None] if scale is not None else rows


class Index:
    """Open with `Index.open(folder)`; `search(queries, k)` gives scores and rows, `path(row)` a row's file."""

    def __init__(self, folder: Path, meta: IndexMeta) -> None:
        self.folder, self.meta = folder, meta
        self._vectors: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._decoded: list[np.ndarray] | None = None  # float32 shards, once warm() held them in memory
        self.stamps: list[FileStamp] = []
        for shard in meta.shards:
            self._vectors.append(self._read_shard(shard))
            self.stamps.extend(self._read_stamps(shard))
        self.live = self._live_rows()

    # reading -------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | os.PathLike) -> Index:
        folder = Path(folder)
        meta_path = folder / "index.json"
        if not meta_path.is_file():
            raise DocembError(f"{folder}: not an index (no index.json); make one with `docemb index`")
        try:
            data = json.loads(meta_path.read_text())
            meta = IndexMeta(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise DocembError(f"{meta_path}: not a docemb index file ({exc})") from None
        if meta.format_version > FORMAT_VERSION:
            raise DocembError(f"{meta_path}: format {meta.format_version} is newer than this docemb reads ({FORMAT_VERSION})")
        return cls(folder, meta)

    def _read_shard(self, shard: str) -> tuple[np.ndarray, np.ndarray | None]:
        try:
            vectors = np.load(self.folder / f"{shard}.npy", mmap_mode="r")
            scale = np.load(self.folder / f"{shard}.scale.npy") if self.meta.storage == "int8" else None
        except (OSError, ValueError) as exc:
            raise DocembError(f"{self.folder / shard}.npy: unreadable index shard ({exc})") from None
        if vectors.ndim != 2 or vectors.shape[1] != self.meta.dim:
            raise DocembError(f"{self.folder / shard}.npy: shape {vectors.shape} does not hold {self.meta.dim}-d rows")
        return vectors, scale

    def _read_stamps(self, shard: str) -> list[FileStamp]:
        with open(self.folder / f"{shard}.csv", newline="", encoding="utf-8", errors=FILE_NAME_ERRORS) as handle:
            return [FileStamp(r["path"], int(r["size"]), int(r["mtime_ns"])) for r in csv.DictReader(handle)]

    def _live_rows(self) -> np.ndarray:
        """True for each row whose path is not embedded again by a later row."""
        last = {stamp.path: row for row, stamp in enumerate(self.stamps)}
        alive = np.zeros(len(self.stamps), dtype=bool)
        alive[list(last.values())] = True
        return alive

    def __len__(self) -> int:
        return int(self.live.sum())

    def path(self, row: int) -> str:
        return self.stamps[row].path

    def known(self) -> dict[str, FileStamp]:
        return {stamp.path: stamp for stamp in self.stamps}

    def warm(self, max_bytes: int = CACHE_BYTES) -> bool:
        """Hold every shard decoded in memory when that takes at most `max_bytes`, so searches
        after the first skip decoding; larger indices stay memory-mapped and are streamed."""
        if self._decoded is None and 4 * len(self.stamps) * self.meta.dim <= max_bytes:
            self._decoded = [decode(np.asarray(vectors), scale) for vectors, scale in self._vectors]
        return self._decoded is not None

    def _blocks(self, chunk: int):
        """(first row, float32 block) over every stored row, a chunk at a time."""
        offset = 0
        shards = self._decoded or [vectors for vectors, _ in self._vectors]
        for (_, scale), vectors in zip(self._vectors, shards):
            for start in range(0, len(vectors), chunk):
                stop = min(start + chunk, len(vectors))
                block = vectors[start:stop]
                yield offset + start, block if self._decoded else decode(block, None if scale is None else scale[start:stop])
            offset += len(vectors)

    def vectors(self, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 embeddings of the given rows (default: every live row, in row order)."""
        rows = np.flatnonzero(self.live) if rows is None else np.asarray(rows)
        out = np.zeros((len(rows), self.meta.dim), dtype=np.float32)
        for first, block in self._blocks(65536):
            inside = (rows >= first) & (rows < first + len(block))
            out[inside] = block[rows[inside] - first]
        return out

    # searching -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 10, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by dot product: (scores, rows), each (Q, k), best first.

        The collection is decoded and scored a chunk at a time, so memory stays at a chunk of
        float32 rows plus Q x chunk scores whatever the storage, and the running best k are
        merged after each chunk. Rows superseded by a later embedding of their file never win."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        self.warm()
        k = min(k, len(self))
        best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_rows = np.zeros((len(queries), 0), dtype=np.int64)
        for first, block in self._blocks(chunk):
            scores = queries @ block.T
            scores[:, ~self.live[first : first + len(block)]] = -np.inf
            top = min(k, scores.shape[1])
            part = np.argpartition(-scores, top - 1, axis=1)[:, :top]
            best_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, axis=1)], axis=1)
            best_rows = np.concatenate([best_rows, part + first], axis=1)
            keep = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
            best_scores, best_rows = np.take_along_axis(best_scores, keep, 1), np.take_along_axis(best_rows, keep, 1)
        return best_scores, best_rows


class IndexWriter:
    """Appends shards to an index folder, one `write_shard` at a time."""

    def __init__(self, folder: str | os.PathLike, meta: IndexMeta, known: dict[str, FileStamp] | None = None) -> None:
        self.folder, self.meta = Path(folder), meta
        self.known = known or {}  # the files already embedded when the writer opened
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def open_or_create(cls, folder: str | os.PathLike, model_name: str, model_sha256: str, dim: int, storage: str) -> IndexWriter:
        folder = Path(folder)
        if storage not in STORAGES:
            raise DocembError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        if (folder / "index.json").is_file():
            existing = Index.open(folder)
            meta = existing.meta
            if meta.model_sha256 != model_sha256:
                raise DocembError(
                    f"{folder}: indexed with {meta.model_name} (sha256 {meta.model_sha256[:12]}), not {model_name} "
                    f"(sha256 {model_sha256[:12]}); embeddings of two models do not compare: choose another --out"
                )
            return cls(folder, meta, existing.known())
        writer = cls(folder, IndexMeta(model_name, model_sha256, dim, storage))
        writer._write_meta()
        return writer

    def write_shard(self, embeddings: np.ndarray, stamps: list[FileStamp]) -> str:
        if len(embeddings) != len(stamps):
            raise ValueError("one stamp per embedding row")
        name = f"shard-{len(self.meta.shards):05d}"
        stored, scale = encode(embeddings, self.meta.storage)
        with atomic_path(self.folder / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, stored)
        if scale is not None:
            with atomic_path(self.folder / f"{name}.scale.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, scale)
        with (
            atomic_path(self.folder / f"{name}.csv") as tmp,
            open(tmp, "w", newline="", encoding="utf-8", errors=FILE_NAME_ERRORS) as handle,
        ):
            writer = csv.DictWriter(handle, fieldnames=["path", "size", "mtime_ns"])
            writer.writeheader()
            writer.writerows(asdict(stamp) for stamp in stamps)
        self.meta.shards.append(name)
        self._write_meta()  # the shard counts from here on
        return name

    def _write_meta(self) -> None:
        write_json(self.folder / "index.json", asdict(self.meta))


def pending(files: Iterable[str], known: dict[str, FileStamp]) -> list[str]:
    """Files (or PDF pages) not yet embedded, or changed (size or mtime) since they were."""
    return [path for path in files if known.get(str(path)) != FileStamp.of(path)]
