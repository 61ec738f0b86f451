"""Resumable training state: tensors in safetensors, everything else in JSON; no pickle.

Each checkpoint is a folder written under a temporary name and renamed when complete; then
`latest.json` is replaced atomically to point at it. A kill at any moment leaves the previous
checkpoint intact and pointed to. Under torch.distributed every rank writes its own tensors
(its PartialFC shard, optimizer moments and RNG) as `rank<r>.safetensors`; rank 0 writes the
JSON and renames the folder once all ranks are done.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from docemb.atomic import write_json
from docemb.errors import DocembError
from docemb.train.distributed import barrier
from docemb.train.state import Run, TrainingState

LATEST = "latest.json"
KEEP = 2


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param_id}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in meta["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def has_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether the run folder holds a finished checkpoint (a run killed while writing its first
    one holds only a partial folder, which the next save replaces)."""
    return (Path(folder) / "checkpoints" / LATEST).is_file()


def save_checkpoint(run: Run) -> Path:
    state, rank = run.state, run.runtime.rank
    root = run.folder / "checkpoints"
    final = root / f"step_{state.step:09d}"
    partial = root / f".step_{state.step:09d}.partial"
    if rank == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    barrier()

    tensors = {
        f"{name}.{k}": v.detach().contiguous().cpu()
        for name, module in run.modules.items()
        for k, v in module.state_dict().items()
    }
    optimizer_tensors, optimizer_meta = _split_optimizer(run.optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    try:
        save_file(tensors, partial / f"rank{rank}.safetensors")
        barrier()
        if rank == 0:
            _write_meta(partial, state, optimizer_meta, run.scheduler, run.scaler, run.runtime.world_size)
    except (OSError, SafetensorError) as exc:  # a full disk, mostly: the last finished checkpoint still stands
        shutil.rmtree(partial, ignore_errors=True)
        raise DocembError(f"{partial}: writing the checkpoint failed ({exc}); the previous checkpoint is kept") from None
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        write_json(root / LATEST, {"checkpoint": final.name})
        for old in sorted(root.glob("step_*"))[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def _write_meta(
    folder: Path,
    state: TrainingState,
    optimizer_meta: dict,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    world_size: int,
) -> None:
    np_state = np.random.get_state()
    meta = {
        "epoch": state.epoch,
        "step": state.step,
        "world_size": world_size,
        "history": state.history,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict(),
        "grad_scaler": scaler.state_dict(),
        "rng": {
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        },
    }
    (folder / "state.json").write_text(json.dumps(meta))


def load_checkpoint(run: Run) -> TrainingState:
    """Restore the run's modules, optimizer, scheduler, gradient scaler and RNGs in place from
    the latest checkpoint."""
    rank, world_size = run.runtime.rank, run.runtime.world_size
    root = run.folder / "checkpoints"
    try:
        folder = root / json.loads((root / LATEST).read_text())["checkpoint"]
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(folder / f"rank{rank}.safetensors")
    except (OSError, KeyError, ValueError, SafetensorError) as exc:
        raise DocembError(f"{root}: no usable checkpoint to resume from ({exc})") from None
    if meta.get("world_size", 1) != world_size:
        raise DocembError(
            f"{folder}: written by {meta.get('world_size', 1)} rank(s); resume it with the same number, not {world_size}"
        )
    for name, module in run.modules.items():
        prefix = f"{name}."
        try:
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as exc:  # another config, or a checkpoint of an older docemb
            raise DocembError(f"{folder}: its {name} does not fit this run's config ({exc})") from None
    run.optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    run.scheduler.load_state_dict(meta["scheduler"])
    if meta.get("grad_scaler"):
        run.scaler.load_state_dict(meta["grad_scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    py = meta["rng"]["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = meta["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return TrainingState(epoch=meta["epoch"], step=meta["step"], history=meta["history"])
