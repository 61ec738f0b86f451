"""The preprocessing contract: a JSON file beside every exported model that says exactly how to
feed it and read it, so that an app (Python, Android, iOS) can never drift from training.

`model.onnx` gets `model.onnx.contract.json`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import docemb
from docemb.atomic import write_json, write_text
from docemb.errors import DocembError
from docemb.preprocess import Preprocessing

FORMAT_VERSION = 1
SUFFIX = ".contract.json"
CARD_SUFFIX = ".card.md"


def contract_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SUFFIX)


def card_path(model_path: str | os.PathLike) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + CARD_SUFFIX)


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
    thresholds: dict | None = None,
    verification: dict | None = None,
) -> Path:
    """`io` is what describe_model() reads from the model file itself; source says where it came
    from; thresholds is threshold_table()'s answer, for apps that decide match or unknown;
    verification is docemb.verify.contract_entry()'s, for apps that verify the shortlist."""
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
        "thresholds": thresholds,
        **({"verification": verification} if verification else {}),
        "source": source,
    }
    return save_contract(model_path, contract)


DEFAULT_MATCH_FPR = 1e-2


def threshold_table(run_dir: str | os.PathLike | None, fpr: float = DEFAULT_MATCH_FPR, prefer: str | None = None) -> dict | None:
    """The match thresholds a training run measured (report.json: per eval set, the cosine that
    keeps each false-positive rate), and the one an app should use by default: `fpr` on the
    eval set `prefer`, else the last one (`make` lists the real documents last). None when the
    run left no report."""
    if not run_dir:
        return None
    report = Path(run_dir) / "report.json"
    try:
        table = json.loads(report.read_text())["thresholds"]
    except (FileNotFoundError, KeyError, json.JSONDecodeError):
        return None
    if not table:
        return None
    return thresholds_from(table, f"the float model, held-out queries ({report})", fpr, prefer)


def thresholds_from(
    table: dict[str, list[dict]], measured_on: str, fpr: float = DEFAULT_MATCH_FPR, prefer: str | None = None
) -> dict:
    """A contract's `thresholds` from a threshold table (per eval set, the cosine that keeps each
    false-positive rate): the default match row is `fpr` on `prefer`, else on the last set."""
    eval_set = prefer if prefer in table else list(table)[-1]
    row = min(table[eval_set], key=lambda r: abs(r["fpr"] - fpr))
    return {
        "measured_on": measured_on,
        "match": {"threshold": row["threshold"], "fpr": row["fpr"], "tpr": row["tpr"], "eval_set": eval_set},
        "table": table,
    }


def save_contract(model_path: str | os.PathLike, contract: dict) -> Path:
    """Write the contract JSON and the model card made from it beside the model; returns the JSON's path."""
    path = contract_path(model_path)
    write_json(path, contract)
    write_text(card_path(model_path), model_card(contract))
    return path


def _drift_line(drift: dict, target: dict | None) -> str:
    line = f"cosine to float mean {drift['cos_mean']:.4f}, min {drift['cos_min']:.4f}"
    if target:  # cos_mean and, for static int8, cos_min
        met = all(drift[key] >= bound for key, bound in target.items())
        bounds = ", ".join(f"{key.removeprefix('cos_')} >= {bound}" for key, bound in target.items())
        line += f" (target {bounds}: {'met' if met else 'NOT met'})"
    return line


def model_card(contract: dict) -> str:
    """A short Markdown card for people: what the file is, how to feed it, where it came from and,
    for int8, how it was calibrated, how far it drifts from float and what stayed float."""
    model_input, output, pre = contract["input"], contract["output"], contract["preprocessing"]
    lines = [
        f"# {contract['model_file']}",
        "",
        f"docemb {contract['docemb_version']} · {contract['size_bytes'] / 1e6:.2f} MB · sha256 `{contract['sha256'][:16]}…`",
        "",
        "## Input",
        f"- `{model_input['name']}` {model_input['dtype']} {model_input['shape']} ({model_input['layout']}), RGB",
        f"- {pre['resize']}-resize to {pre['size']}x{pre['size']}, {pre['interpolation']}",
    ]
    if model_input.get("normalization"):
        lines.append(f"- normalisation {model_input['normalization']}")
    else:
        lines.append(f"- x / 255, then (x - mean) / std with mean {pre['mean']}, std {pre['std']}")
    if contract.get("metadata"):
        lines.append(f"- metadata: {contract['metadata']}")
    if model_input.get("quantization"):
        q = model_input["quantization"]
        lines.append(f"- then int8: round(x / {q['scale']:.6g}) + {q['zero_point']}, clipped to [-128, 127]")
    lines += [
        "",
        "## Output",
        f"- `{output['name']}` {output['dtype']} {output['shape']}, L2-normalised: compare embeddings by dot product",
    ]
    if contract.get("thresholds"):
        match = contract["thresholds"]["match"]
        lines.append(
            f"- match when cosine >= {match['threshold']:.4f} (false-positive rate {match['fpr']:g}, true-positive rate "
            f"{match['tpr']:.2f} on {match['eval_set']}; {contract['thresholds']['measured_on']})"
        )
    lines += [
        "",
        "## Source",
    ]
    lines += [f"- {key}: {value}" for key, value in contract["source"].items() if value is not None]
    quantization = contract.get("quantization")
    if quantization:
        lines += [
            "",
            "## Quantization",
            f"- {quantization['scheme']}: weights {quantization['weights']}, activations {quantization['activations']}",
        ]
        calibration = quantization.get("calibration")
        if calibration:
            method = f"{calibration['method']}, " if calibration.get("method") else ""
            lines.append(f"- calibration: {method}{calibration['images']} images from {', '.join(calibration['folders'])}")
        if quantization.get("drift"):
            lines.append(
                f"- drift on held-out calibration-folder images: {_drift_line(quantization['drift'], quantization.get('drift_target'))}"
            )
        qat = quantization.get("qat")
        if qat:
            verdict = "kept" if qat["kept"] else "not kept (no gain)"
            lines.append(
                f"- quantization-aware fine-tune ({qat['steps']} steps, lr {qat['lr']:g}, {qat['images']} images; {verdict}): "
                f"post-training {_drift_line(qat['post_training_drift'], None)}; fine-tuned {_drift_line(qat['fine_tuned_drift'], None)}"
            )
        if "int8_weight_share" in quantization:
            lines.append(f"- int8 weights: {quantization['int8_weight_share']:.1%} of the weighted layers' parameters")
        if "float_nodes" in quantization:
            stayed = ", ".join(f"{n['name']} ({n['op_type']})" for n in quantization["float_nodes"]) or "nothing (all int8)"
            lines.append(f"- kept in float: {stayed}")
        if quantization.get("float_front"):
            lines.append(f"- float front (stem and first blocks, input float32): {', '.join(quantization['float_front'])}")
        if "float_ops" in quantization:
            stayed = ", ".join(f"{op} x{n}" for op, n in quantization["float_ops"].items()) or "nothing (all int8)"
            lines.append(f"- ops computing in float32: {stayed}")
        if "xnnpack_partitions" in quantization:
            left = ", ".join(f"{op} x{n}" for op, n in Counter(quantization["not_delegated"]).items()) or "none"
            lines.append(f"- XNNPACK: {quantization['xnnpack_partitions']} partition(s); ops left on default kernels: {left}")
    return "\n".join(lines) + "\n"


BUILTIN_NORMALIZATION = "built in: give RGB values 0-255; the model applies mean and std"


def builtin_normalization(contract: dict) -> Preprocessing | None:
    """The Preprocessing a model applies itself when its contract says normalisation is built in
    (its input is then RGB 0-255), else None."""
    if contract["input"].get("normalization") != BUILTIN_NORMALIZATION:
        return None
    return Preprocessing.from_dict(contract["preprocessing"])


# what every reader of a contract relies on; the rest is description
REQUIRED = {
    "format_version": (),
    "sha256": (),
    "input": ("name", "shape", "dtype"),
    "output": ("name", "shape", "dtype"),
    "preprocessing": ("size", "mean", "std"),
}


def read_contract(model_path: str | os.PathLike) -> dict:
    """The contract beside `model_path`, checked for the fields readers use and for a format
    this docemb knows."""
    path = contract_path(model_path)
    try:
        contract = json.loads(path.read_text())
    except FileNotFoundError:
        raise DocembError(f"{path}: contract missing; every model needs the contract written by `docemb export`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DocembError(f"{path}: not valid JSON ({exc})") from None
    check_fields(path, contract)
    return contract


def check_fields(path: Path, contract: object) -> None:
    """A DocembError naming `path` and what is wrong, for a contract no reader can use."""
    if not isinstance(contract, dict):
        raise DocembError(f"{path}: not a contract (a JSON object was expected, found {type(contract).__name__})")
    version = contract.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DocembError(f"{path}: contract format {version} is newer than this docemb reads ({FORMAT_VERSION}); upgrade docemb")
    missing = []
    for key, subkeys in REQUIRED.items():
        if key not in contract:
            missing.append(key)
        elif subkeys:
            section = contract[key] if isinstance(contract[key], dict) else {}
            missing += [f"{key}.{sub}" for sub in subkeys if sub not in section]
    if missing:
        raise DocembError(f"{path}: missing {', '.join(missing)}; write it again with `docemb export`")


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
