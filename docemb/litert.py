"""Converting to and running .tflite models with litert-torch and ai-edge-litert, and seeing what XNNPACK took.

The TFLite pieces install with the `tflite` extra (`pip install -c constraints.txt -e .[tflite]`;
the Makefile does); everything here imports them lazily and says so when they are missing.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from docemb.atomic import atomic_path
from docemb.errors import DocembError, first_line

SIGNATURE = "embed"
EXTRA_HINT = "install the TFLite tools: pip install -c constraints.txt -e '.[tflite]' (make setup does)"


@contextlib.contextmanager
def quiet_conversion():
    """litert-torch prints a progress line per conversion stage; keep the user's terminal for ours."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def convert(module, sample, path: Path, quant_config=None) -> Path:
    """Convert `module` (traced at `sample`) to `path` atomically, with one signature, SIGNATURE."""
    try:
        import litert_torch
    except ImportError:
        raise DocembError(f"{path}: TFLite export needs litert-torch; {EXTRA_HINT}") from None
    with atomic_path(path) as tmp, quiet_conversion():
        converter = litert_torch.signature(SIGNATURE, module, (sample,))
        converter.convert(quant_config=quant_config).export(str(tmp))
    return path


def interpreter(path: str | os.PathLike, threads: int = 1, xnnpack: bool = True):
    """An allocated LiteRT interpreter; XNNPACK is applied by default, `xnnpack=False` runs the
    reference kernels alone."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise DocembError(f"{path}: running .tflite models needs ai-edge-litert; {EXTRA_HINT}") from None
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        runner = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        runner.allocate_tensors()  # where an op the runtime lacks is found
    except (ValueError, RuntimeError) as exc:
        raise DocembError(f"{path}: not a loadable TFLite model ({first_line(exc)})") from None
    return runner


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * scale


def to_input(batch: np.ndarray, detail: dict, builtin_normalization=None) -> np.ndarray:
    """NCHW normalised float32 batch -> what the file's input takes: un-normalised to 0-255 for a
    model with normalisation built in (pass its Preprocessing), NHWC when the input is, and
    quantized with the input's own scale and zero point when it is int8."""
    if builtin_normalization is not None:
        batch = builtin_normalization.denormalize(batch)
    if int(detail["shape"][-1]) == 3:
        batch = batch.transpose(0, 2, 3, 1)
    if detail["dtype"] != np.float32:
        batch = _quantize(batch, detail)
    return np.ascontiguousarray(batch)


def tflite_embedder(path: str | os.PathLike, threads: int = 1, builtin_normalization=None):
    """NCHW normalised float32 batch -> (N, D) float32 embeddings, whatever the file's input
    layout and type (see to_input). The file has batch 1; rows run one by one."""
    runner = interpreter(path, threads)
    input_detail, output_detail = runner.get_input_details()[0], runner.get_output_details()[0]
    busy = threading.Lock()  # one interpreter holds one input and one output tensor: calls take turns

    def run(batch: np.ndarray) -> np.ndarray:
        rows = []
        for row in to_input(batch, input_detail, builtin_normalization):
            with busy:
                runner.set_tensor(input_detail["index"], row[None])
                runner.invoke()
                out = runner.get_tensor(output_detail["index"])
            rows.append(out[0] if output_detail["dtype"] == np.float32 else _dequantize(out, output_detail)[0])
        return np.stack(rows).astype(np.float32)

    return run


@dataclass
class Delegation:
    """What XNNPACK took from a model on this host: its partitions (DELEGATE nodes) and the ops
    left on LiteRT's own kernels, each as (op, output dtype, output tensor name)."""

    partitions: int
    not_delegated: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ops_left_out(self) -> list[str]:
        return [op for op, _, _ in self.not_delegated]

    def summary(self) -> str:
        left = Counter(self.ops_left_out)
        rest = ", ".join(f"{op} x{n}" for op, n in left.most_common()) or "none"
        return f"{self.partitions} XNNPACK partition(s), ops not delegated: {rest}"


def delegation(path: str | os.PathLike) -> Delegation:
    """Count XNNPACK partitions and find the ops it left out.

    The interpreter lists the original nodes and, after them, one DELEGATE node per partition,
    but not which nodes each partition replaced. A node belongs to a partition when it lies on a
    path from the partition's inputs to its outputs, so walking back from each DELEGATE's
    outputs to its inputs marks every delegated node; the unmarked ones run outside XNNPACK.
    """
    runner = interpreter(path, threads=1)
    ops = runner._get_ops_details()  # the public API lists no nodes
    tensors = {t["index"]: t for t in runner.get_tensor_details()}
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    originals = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in originals for t in op["outputs"]}
    covered: set[int] = set()
    for delegate in delegates:
        boundary = {int(t) for t in delegate["inputs"]}
        stack = [int(t) for t in delegate["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in covered:
                continue
            covered.add(node)
            stack.extend(int(t) for t in ops[node]["inputs"] if t >= 0)
    left = []
    for op in originals:
        if op["index"] in covered:
            continue
        output = tensors.get(int(op["outputs"][0])) if len(op["outputs"]) else None
        dtype = np.dtype(output["dtype"]).name if output else "?"
        left.append((op["op_name"], dtype, output["name"] if output else ""))
    return Delegation(partitions=len(delegates), not_delegated=left)


def model_ops(path: str | os.PathLike) -> list[tuple[dict, list[dict], dict | None]]:
    """Every builtin op of the model as written (before any delegate): the op, its input
    tensors' details and its first output's (None for an op without outputs)."""
    runner = interpreter(path, threads=1, xnnpack=False)
    tensors = {t["index"]: t for t in runner.get_tensor_details()}
    return [
        (
            op,
            [tensors[int(i)] for i in op["inputs"] if int(i) >= 0],
            tensors[int(op["outputs"][0])] if len(op["outputs"]) else None,
        )
        for op in runner._get_ops_details()  # the public API lists no nodes
    ]


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Builtin ops of the model as written (before any delegate), '<OP> <output dtype>' -> count."""
    counts = Counter(f"{op['op_name']} {np.dtype(output['dtype']).name if output else '?'}" for op, _, output in model_ops(path))
    return dict(counts.most_common())


def describe_tflite(path: str | os.PathLike) -> dict:
    """Input and output as the .tflite file declares them, in the shape describe_onnx() gives,
    plus layout, quantization (scale, zero point) and the signature's name."""
    runner = interpreter(Path(path), threads=1, xnnpack=False)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if len(inputs) != 1 or len(outputs) != 1:
        raise DocembError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")

    def describe(detail: dict) -> dict:
        scale, zero_point = detail["quantization"]
        entry = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]], "dtype": np.dtype(detail["dtype"]).name}
        if scale:
            entry["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
        return entry

    signatures = list(runner.get_signature_list())
    input_entry = describe(inputs[0])
    input_entry["layout"] = "NHWC" if input_entry["shape"][-1] == 3 else "NCHW"
    return {"input": input_entry, "output": describe(outputs[0]), "signature": signatures[0] if signatures else None}
