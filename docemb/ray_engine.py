"""`docemb index --engine ray`: the same embedding on Ray Data, across the cores of a cluster.

Ray Data runs a pool of actors, one per CPU of the cluster (or `--ray-actors`), each loading the
model once and decoding and embedding the batches it is sent. The driver lists the files, takes the
batches back in order and writes the shards itself, so the index is the one a local run writes:
same format, same resume after a kill, same refusal of another model. Files and the model must
sit at the same path on every node (a shared or synchronised file system).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from docemb.bulk import Embedded, Engine, decode_job, embedding_dim
from docemb.errors import DocembError

RAY_WINDOW = 1_000_000  # files per Ray dataset: the driver holds one window's rows, not the collection's


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: RAY_ADDRESS, else start one here
    actors: int | None = None  # default: one per CPU of the cluster (over the inference threads)


class BatchEmbedder:
    """A Ray Data actor: the model loaded once, then every batch decoded and embedded here."""

    def __init__(self, model_path: str, threads: int, fast_jpeg: bool) -> None:
        from docemb.api import load_model

        self.model = load_model(model_path, threads=threads)
        self.dim = embedding_dim(self.model)
        self.fast_jpeg = fast_jpeg

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every input row comes back: its embedding, or zeros and the reason it could not be read."""
        decoded = [decode_job((str(path), self.model.preprocessing, self.fast_jpeg)) for path in batch["path"]]
        good = np.array([image is not None for _, image, _ in decoded])
        embeddings = np.zeros((len(decoded), self.dim), np.float32)
        if good.any():
            embeddings[good] = self.model.embed_resized(np.stack([image for _, image, _ in decoded if image is not None]))
        return {"path": batch["path"], "embedding": embeddings, "error": np.array([e or "" for *_, e in decoded], dtype=object)}


def ray_engine(model_path: Path, threads: int, batch_size: int, fast_jpeg: bool, settings: RaySettings) -> Engine:
    """An Engine for docemb.bulk.build_index that runs on Ray Data."""

    def run(todo: list[str]) -> Generator[Embedded, None, None]:
        if not todo:
            return
        ray, started = _connect(settings.address)
        try:
            for start in range(0, len(todo), RAY_WINDOW):
                yield from _embedded_batches(
                    ray, todo[start : start + RAY_WINDOW], model_path, threads, batch_size, fast_jpeg, settings
                )
        finally:
            if started:  # a local instance of this run's own
                ray.shutdown()

    return run


def _embedded_batches(
    ray, todo: list[str], model_path: Path, threads: int, batch_size: int, fast_jpeg: bool, settings: RaySettings
) -> Generator[Embedded, None, None]:
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in the files' order
    context.enable_progress_bars = False  # build_index draws the one bar
    dataset = ray.data.from_items([{"path": path} for path in todo]).map_batches(
        BatchEmbedder,
        fn_constructor_kwargs={"model_path": str(Path(model_path).resolve()), "threads": threads, "fast_jpeg": fast_jpeg},
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=settings.actors or max(1, int(ray.cluster_resources().get("CPU", 1) // threads)),
        num_cpus=threads,
    )
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        ok = batch["error"] == ""
        yield Embedded(
            [str(p) for p in batch["path"][ok]], np.asarray(batch["embedding"][ok], np.float32), list(batch["error"][~ok])
        )


def _connect(address: str | None) -> tuple[object, bool]:
    """Ray, and whether this call started it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DocembError("--engine ray needs Ray Data: pip install 'docemb[ray]'") from None
    if ray.is_initialized():
        return ray, False
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray, True
