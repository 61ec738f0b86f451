"""The Python API for apps and notebooks: `docemb.load_model(path).embed(images)`.

Any model docemb makes loads the same way: a `.safetensors` checkpoint (run in torch) or an
exported `.onnx` / `.tflite`, float or int8, fed exactly as its contract says.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docemb.contract import sha256
from docemb.embedders import Embedder, load_embedder
from docemb.errors import DocembError
from docemb.imageio import read_rgb
from docemb.preprocess import Preprocessing

ImageLike = str | os.PathLike | np.ndarray  # a file, or an HxWx3 uint8 RGB array


@dataclass
class Model:
    """A loaded embedder: `embed` turns images into unit-length rows, compared by dot product."""

    path: Path
    preprocessing: Preprocessing
    run: Embedder
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def embed(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 64) -> np.ndarray:
        """(N, D) float32 embeddings of files or RGB arrays (photos, collections), one row per image, in order."""
        return self._embed(images, batch_size, self.preprocessing.resize)

    def embed_templates(self, images: ImageLike | Sequence[ImageLike], batch_size: int = 64) -> np.ndarray:
        """(N, views, D) embeddings of clean templates to match photos against, each as every view
        the contract registers (`template_views`), the way the match threshold was measured; a
        photo scores a template's best view (`docemb.template_scores`)."""
        items = [images] if _single(images) else list(images)
        views = len(self.preprocessing.views)
        flat = self._embed([view for i in items for view in self.preprocessing.template_inputs(_rgb(i))], batch_size, _as_is)
        return flat.reshape(len(items), views, -1)

    def _embed(
        self, images: ImageLike | Sequence[ImageLike], batch_size: int, resize: Callable[[np.ndarray], np.ndarray]
    ) -> np.ndarray:
        items = [images] if _single(images) else list(images)
        rows = [self.embed_resized(np.stack(batch)) for batch in _batches((resize(_rgb(i)) for i in items), batch_size)]
        if not rows:
            raise DocembError("no images to embed")
        return np.concatenate(rows)

    def embed_resized(self, batch: np.ndarray) -> np.ndarray:
        """Embed an NHWC uint8 batch already at the model's input size (the fast path of bulk indexing)."""
        embeddings = np.asarray(self.run(self.preprocessing.normalize(batch)), dtype=np.float32)
        if not np.isfinite(embeddings).all():  # a broken model file; never hand on or store such rows
            bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
            raise DocembError(
                f"{self.path}: gave non-finite embeddings for {bad} of {len(embeddings)} images; the model file is broken"
            )
        return embeddings


def _single(images: ImageLike | Sequence[ImageLike]) -> bool:
    return isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3)


def _as_is(resized: np.ndarray) -> np.ndarray:
    return resized


def _rgb(image: ImageLike) -> np.ndarray:
    array = image if isinstance(image, np.ndarray) else read_rgb(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise DocembError(f"an image array must be HxWx3 uint8 RGB, got {array.dtype} {array.shape}")
    return array


def _batches(items: Iterable[np.ndarray], size: int) -> Iterable[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def load_model(path: str | os.PathLike, threads: int | None = None) -> Model:
    """Load a checkpoint or exported model; `threads` defaults to every core."""
    path = Path(path)
    if not path.is_file():
        raise DocembError(f"{path}: model file not found")
    run, preprocessing = load_embedder(path, threads)
    return Model(path=path, preprocessing=preprocessing, run=run, sha256=sha256(path))
