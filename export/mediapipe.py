"""MediaPipe ImageEmbedder metadata for a docemb TFLite model, and a check that MediaPipe runs it.

Runs in its own environment (`make mediapipe-env`: mediapipe and this package without its
dependencies), because mediapipe pulls opencv-contrib-python, which clashes with the main
install's opencv-python-headless (both are `cv2`). This module therefore imports only the parts
of docemb that need nothing beyond numpy and Pillow (the atomic writer and the contract).

MediaPipe feeds an ImageEmbedder RGB values 0-255 and accepts one mean and one std for all
channels, so the model must be exported with the normalisation built in (`docemb export
--include tflite --builtin-normalization`) and the metadata says mean 0, std 1.

    python -m docemb.export.mediapipe MODEL.tflite [--out OUT.tflite] [--embed IMAGE ...]

MediaPipe resizes images itself (bilinear, without antialiasing): give it images already at the
contract's size, resized as the contract says, and it matches docemb to 1e-7; full-size photos
drift (cosine ~0.98 measured on generated documents).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from docemb.atomic import atomic_path
from docemb.contract import BUILTIN_NORMALIZATION, read_contract, save_contract, sha256
from docemb.errors import DocembError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"


def _generated_schema(name: str) -> ModuleType:
    """mediapipe ships the flatbuffer bindings of the TFLite model and metadata schemas in
    mediapipe/tasks/metadata/, but aliases `mediapipe.tasks` to `mediapipe.tasks.python`, so
    they cannot be imported by name (and its metadata writers fail to import): load by path."""
    import mediapipe

    path = Path(mediapipe.__file__).parent / "tasks" / "metadata" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_docemb_mediapipe_{name}", path)
    if spec is None or spec.loader is None or not path.exists():
        raise DocembError(f"{path}: not found; this mediapipe release moved its schema bindings")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_builtin_contract(model_path: Path) -> dict:
    """The model's contract, refusing models MediaPipe would feed wrongly."""
    contract = read_contract(model_path)
    problems = []
    if contract["input"].get("layout") != "NHWC":
        problems.append(f"input layout is {contract['input'].get('layout')}, MediaPipe needs NHWC")
    if contract["input"].get("dtype") != "float32":
        problems.append(f"input dtype is {contract['input'].get('dtype')}, MediaPipe's float path needs float32")
    if contract["input"].get("normalization") != BUILTIN_NORMALIZATION:
        problems.append("normalisation is not built in (export with --builtin-normalization)")
    if problems:
        raise DocembError(f"{model_path}: not usable by MediaPipe's ImageEmbedder: " + "; ".join(problems))
    return contract


def image_embedder_metadata(contract: dict) -> bytes:
    """The TFLite metadata flatbuffer ImageEmbedder reads: an RGB image input in 0-255 with
    normalisation mean 0 / std 1 (the model normalises itself), and a feature-vector output."""
    import flatbuffers

    schema = _generated_schema("metadata_schema_py_generated")

    normalization = schema.NormalizationOptionsT()
    normalization.mean, normalization.std = [0.0], [1.0]
    unit = schema.ProcessUnitT()
    unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization

    image = schema.ImagePropertiesT()
    image.colorSpace = schema.ColorSpaceType.RGB
    image_content = schema.ContentT()
    image_content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image_content.contentProperties = image
    stats = schema.StatsT()
    stats.min, stats.max = [0.0], [255.0]

    image_input = schema.TensorMetadataT()
    image_input.name = "image"
    size = contract["preprocessing"]["size"]
    image_input.description = f"RGB image, {size}x{size}, values 0-255 (stretch-resized by MediaPipe)"
    image_input.content = image_content
    image_input.processUnits = [unit]
    image_input.stats = stats

    feature_content = schema.ContentT()
    feature_content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    feature_content.contentProperties = schema.FeaturePropertiesT()
    embedding = schema.TensorMetadataT()
    embedding.name = "embedding"
    embedding.description = f"{contract['output']['shape'][-1]}-d embedding, L2-normalised: compare by dot product"
    embedding.content = feature_content

    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [image_input]
    subgraph.outputTensorMetadata = [embedding]
    metadata = schema.ModelMetadataT()
    metadata.name = "docemb document embedder"
    metadata.description = "Embeds a document photo for template matching and image search (docemb)."
    metadata.version = contract.get("docemb_version", "")
    metadata.subgraphMetadata = [subgraph]
    metadata.minParserVersion = MIN_PARSER_VERSION

    builder = flatbuffers.Builder(1024)
    builder.Finish(metadata.Pack(builder), file_identifier=METADATA_IDENTIFIER)
    return bytes(builder.Output())


def attach_metadata(model_bytes: bytes, metadata: bytes) -> bytes:
    """The model with `metadata` stored in a new buffer named TFLITE_METADATA (replacing an old one)."""
    import flatbuffers

    schema = _generated_schema("schema_py_generated")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if m.name.decode() != METADATA_NAME]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(model_bytes) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_mediapipe_model(model_path: Path, out: Path) -> Path:
    """Write `model_path` with ImageEmbedder metadata to `out` (may be the same file), and its contract beside it."""
    contract = read_builtin_contract(model_path)
    data = attach_metadata(model_path.read_bytes(), image_embedder_metadata(contract))
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    contract = {
        **contract,
        "model_file": out.name,
        "sha256": sha256(out),
        "size_bytes": out.stat().st_size,
        "metadata": "MediaPipe ImageEmbedder (RGB 0-255 input, mean 0 std 1, feature-vector output)",
    }
    save_contract(out, contract)
    return out


def mediapipe_embed(model_path: Path, images: list[Path]) -> np.ndarray:
    """Embeddings of `images` by MediaPipe's own ImageEmbedder, as an app using MediaPipe Tasks gets them."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageEmbedderOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)), l2_normalize=False, quantize=False
    )
    rows = []
    with vision.ImageEmbedder.create_from_options(options) as embedder:
        for image_path in images:
            result = embedder.embed(mp.Image.create_from_file(str(image_path)))
            rows.append(np.asarray(result.embeddings[0].embedding, dtype=np.float32))
    return np.stack(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.export.mediapipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help=".tflite exported with --builtin-normalization (NHWC, float32)")
    parser.add_argument("--out", type=Path, help="output file (default: add the metadata to MODEL in place)")
    parser.add_argument("--embed", type=Path, nargs="*", default=[], help="images to embed with ImageEmbedder afterwards")
    parser.add_argument("--embed-out", type=Path, help="write those embeddings here (.npy) instead of printing them")
    args = parser.parse_args(argv)
    out = args.out or args.model
    try:
        write_mediapipe_model(args.model, out)
        print(f"wrote {out} with MediaPipe ImageEmbedder metadata")
        if args.embed:
            embeddings = mediapipe_embed(out, args.embed)
            if args.embed_out:
                np.save(args.embed_out, embeddings)
            else:
                for path, row in zip(args.embed, embeddings):
                    print(f"{path}: {np.array2string(row[:4], precision=4)}... norm {np.linalg.norm(row):.4f}")
    except DocembError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
