"""The preprocessing contract: a JSON file beside every exported model that says exactly how to
feed it and read it, so that an app (Python, Android, iOS) can never drift from training.

`model.onnx` gets `model.onnx.contract.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import docemb
from docemb.atomic import write_json
from docemb.errors import DocembError
from docemb.preprocess import Preprocessing

FORMAT_VERSION = 1
SUFFIX = ".contract.json"


def contract_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SUFFIX)


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_contract(
    model_path: str | os.PathLike,
    preprocessing: Preprocessing,
    io: dict,
    source: dict,
    quantization: dict | None = None,
) -> Path:
    """`io` is what describe_model() reads from the model file itself; source says where it came from."""
    model_path = Path(model_path)
    contract = {
        "format_version": FORMAT_VERSION,
        "docemb_version": docemb.__version__,
        "model_file": model_path.name,
        "sha256": sha256(model_path),
        "size_bytes": model_path.stat().st_size,
        "input": {"layout": "NCHW", **io["input"], "color_order": "RGB"},
        "preprocessing": preprocessing.to_dict(),
        **({"signature": io["signature"]} if io.get("signature") else {}),
        "output": {**io["output"], "l2_normalized": True},
        "quantization": quantization,
        "source": source,
    }
    path = contract_path(model_path)
    write_json(path, contract)
    return path


BUILTIN_NORMALIZATION = "built in: give RGB values 0-255; the model applies mean and std"


def builtin_normalization(contract: dict) -> Preprocessing | None:
    """The Preprocessing a model applies itself when its contract says normalisation is built in
    (its input is then RGB 0-255), else None."""
    if contract["input"].get("normalization") != BUILTIN_NORMALIZATION:
        return None
    return Preprocessing.from_dict(contract["preprocessing"])


def read_contract(model_path: str | os.PathLike) -> dict:
    path = contract_path(model_path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DocembError(f"{path}: contract missing; every model needs the contract written by `docemb export`") from None
    except json.JSONDecodeError as exc:
        raise DocembError(f"{path}: not valid JSON ({exc})") from None


def describe_onnx(model_path: str | os.PathLike) -> dict:
    """Input and output names, shapes and dtypes as the ONNX file declares them."""
    import onnx

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types for a damaged file
        raise DocembError(f"{model_path}: not a readable ONNX model ({exc.__class__.__name__}: {exc})") from None

    def describe(value) -> dict:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return {"name": value.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}

    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise DocembError(f"{model_path}: expected one input and one output, found {len(inputs)} and {len(model.graph.output)}")
    return {"input": describe(inputs[0]), "output": describe(model.graph.output[0])}


def describe_model(model_path: str | os.PathLike) -> dict:
    """describe_onnx() or, for .tflite, docemb.litert.describe_tflite()."""
    if str(model_path).endswith(".tflite"):
        from docemb.litert import describe_tflite

        return describe_tflite(model_path)
    return describe_onnx(model_path)


def check_contract(model_path: str | os.PathLike) -> dict:
    """Read the contract and confirm it describes this very file; returns the contract."""
    contract = read_contract(model_path)
    if contract.get("sha256") != sha256(model_path):
        raise DocembError(
            f"{contract_path(model_path)}: sha256 differs from {Path(model_path).name} (model changed after export?)"
        )
    problems = []
    declared = describe_model(model_path)
    for side in ("input", "output"):
        for key in ("name", "shape", "dtype"):
            if contract[side].get(key) != declared[side][key]:
                problems.append(f"{side} {key}: contract says {contract[side].get(key)!r}, model has {declared[side][key]!r}")
    size = contract["preprocessing"]["size"]
    shape = declared["input"]["shape"]
    spatial = shape[1:3] if declared["input"].get("layout") == "NHWC" else shape[2:]
    if spatial != [size, size]:
        problems.append(f"preprocessing size {size} does not match input shape {shape}")
    if problems:
        raise DocembError(f"{contract_path(model_path)}: disagrees with {Path(model_path).name}: " + "; ".join(problems))
    return contract
