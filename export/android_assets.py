"""The Android demo's assets: the model, its contract, and golden files that pin the app's
preprocessing and matching to Python's.

    python -m docemb.export.android_assets --model models/model_int8_static.tflite \\
        --images runs/default/synth/eval --out android_demo/app/src/main/assets

Golden files (under `golden/`): a few template images and photo-distorted queries as PNG at
their own size (so the app's resize is tested too), the exact input tensor Python feeds the
model for each (for a template, one per view the contract registers it as; little-endian int8
or float32, the contract's layout), the embedding the model returns, and for each query the
scores against the registered templates (each its best view) and the decision (best template, or
unknown below the contract's match threshold).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from docemb.atomic import atomic_path, write_json
from docemb.contract import check_contract, contract_path
from docemb.errors import DocembError
from docemb.evaluation import template_scores
from docemb.imageio import list_images, read_rgb
from docemb.litert import interpreter, to_input
from docemb.photo import distort, photo_distortion
from docemb.preprocess import Preprocessing

MODEL_ASSET = "model.tflite"
MAX_SIDE = 400  # golden PNGs stay small in the repository; the app's resize still works on them


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rescaled to length 1, as the app does: a model's output need not be exactly unit length
    (int8 graphs measured 0.994-0.998 before docemb kept the L2 normalisation in float)."""
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def match(query: np.ndarray, templates: np.ndarray, names: list[str], threshold: float) -> dict:
    """The decision rule the app repeats: best cosine over each template's views (T, views, D),
    unknown below threshold."""
    scores = template_scores(unit(query)[None], unit(templates))[0]
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    return {
        "scores": [[names[i], float(scores[i])] for i in order],
        "best": names[best],
        "decision": names[best] if scores[best] >= threshold else "unknown",
    }


def _save_png(image: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _save_raw(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes())


def write_android_assets(model: Path, images: Path, out: Path, registered: int = 3, unregistered: int = 2, seed: int = 1) -> Path:
    """Copy the model and contract into `out` and write `out/golden/`; returns golden.json's path."""
    contract = check_contract(model)
    if contract["input"]["layout"] != "NHWC":
        raise DocembError(f"{model}: the app feeds NHWC (Android bitmaps); export with --layout NHWC")
    threshold = (contract.get("thresholds") or {}).get("match", {}).get("threshold")
    if threshold is None:
        raise DocembError(f"{contract_path(model)}: no match threshold; export from a checkpoint whose run has report.json")
    paths = list_images(images)
    if len(paths) < registered + unregistered:
        raise DocembError(f"{images}: need {registered + unregistered} images, found {len(paths)}")

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, out / MODEL_ASSET)
    shutil.copyfile(contract_path(model), out / f"{MODEL_ASSET}.contract.json")
    golden = out / "golden"
    if golden.exists():
        shutil.rmtree(golden)
    golden.mkdir()

    preprocessing = Preprocessing.from_dict(contract["preprocessing"])
    runner = interpreter(model, threads=1)
    input_detail, output_detail = runner.get_input_details()[0], runner.get_output_details()[0]

    def embed(name: str, resized: np.ndarray) -> tuple[dict, np.ndarray]:
        """The model input Python builds and the model's embedding, saved as `name`.*.bin."""
        tensor = to_input(preprocessing.normalize(resized)[None], input_detail)
        runner.set_tensor(input_detail["index"], tensor)
        runner.invoke()
        embedding = runner.get_tensor(output_detail["index"])[0].astype(np.float32)
        _save_raw(tensor[0], golden / f"{name}.input.bin")
        _save_raw(embedding, golden / f"{name}.embedding.bin")
        return {"input": f"{name}.input.bin", "embedding": f"{name}.embedding.bin"}, embedding

    def record(name: str, rgb: np.ndarray) -> tuple[dict, np.ndarray]:
        """A query: its PNG, input and embedding (also returned)."""
        _save_png(rgb, golden / f"{name}.png")
        files, embedding = embed(name, preprocessing.resize(rgb))
        return {"name": name, "image": f"{name}.png", **files}, embedding

    def register(name: str, rgb: np.ndarray) -> tuple[dict, np.ndarray]:
        """A template: its PNG, and the input and embedding of each view (embeddings returned)."""
        _save_png(rgb, golden / f"{name}.png")
        views = [embed(f"{name}.view{v}", resized) for v, resized in enumerate(preprocessing.template_inputs(rgb))]
        return {"name": name, "image": f"{name}.png", "views": [f for f, _ in views]}, np.stack([e for _, e in views])

    pipeline = photo_distortion("medium", seed=seed)
    # evenly spaced through the folder: generated sets keep near-duplicate families together
    step = len(paths) // (registered + unregistered)
    sources = [read_rgb(p, max_side=MAX_SIDE) for p in paths[::step][: registered + unregistered]]
    recorded = [register(f"template_{i}", image) for i, image in enumerate(sources[:registered])]
    templates = [entry for entry, _ in recorded]
    template_embeddings = np.stack([embedding for _, embedding in recorded])
    names = [t["name"] for t in templates]
    # a distorted photo of every source (those past `registered` were never registered), and the
    # first template again at another size, as a clean rescan: a query that should match
    photos = [(distort(image, pipeline), names[i] if i < registered else None) for i, image in enumerate(sources)]
    rescan = Image.fromarray(sources[0]).resize((sources[0].shape[1] * 3 // 4, sources[0].shape[0] * 3 // 4))
    photos.append((np.asarray(rescan), names[0]))
    queries = []
    for i, (photo, of) in enumerate(photos):
        query, embedding = record(f"query_{i}", photo)
        query["of"] = of
        query["expected"] = match(embedding, template_embeddings, names, threshold)
        queries.append(query)

    index = golden / "golden.json"
    write_json(
        index,
        {
            "model": MODEL_ASSET,
            "input": {"dtype": contract["input"]["dtype"], "shape": contract["input"]["shape"]},
            "threshold": threshold,
            "templates": templates,
            "queries": queries,
        },
    )
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.export.android_assets", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, required=True, help=".tflite with its contract (NHWC), e.g. model_int8_static.tflite"
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of document images to draw templates and queries from")
    parser.add_argument("--out", type=Path, default=Path("android_demo/app/src/main/assets"), help="the app's assets folder")
    args = parser.parse_args(argv)
    try:
        index = write_android_assets(args.model, args.images, args.out)
    except DocembError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"wrote {args.out / MODEL_ASSET}, its contract and golden files ({index})")


if __name__ == "__main__":
    main()
