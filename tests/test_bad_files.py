"""Broken model and contract files: each gets one line that names the file and the problem, from
the Python API and from the command line (exit 2, no traceback unless --debug)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from onnx import TensorProto, helper

from docemb.api import load_model
from docemb.cli import main
from docemb.contract import FORMAT_VERSION, contract_path, describe_model, write_contract
from docemb.errors import DocembError


@pytest.fixture()
def onnx_model(small_model, tmp_path):
    from docemb.export.onnx_export import export_onnx

    path = export_onnx(small_model, tmp_path / "good.onnx")
    write_contract(path, small_model.preprocessing, describe_model(path), {"checkpoint": None})
    return path


def _broken_copy(model, name: str, data: bytes):
    """`data` as model file `name` beside `model`, with `model`'s contract (readers look there first)."""
    path = model.with_name(name)
    path.write_bytes(data)
    shutil.copy(contract_path(model), contract_path(path))
    return path


def _model_with(opset: int, op: str = "Identity", domain: str = ""):
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize(
    "name, data",
    [
        ("truncated.onnx", "half"),
        ("random.onnx", np.random.default_rng(0).bytes(5000)),
        ("newer_opset.onnx", _model_with(opset=99)),
        ("unknown_op.onnx", _model_with(opset=17, op="NoSuchOp", domain="com.example")),
    ],
)
def test_an_onnx_file_onnxruntime_cannot_load_is_named(onnx_model, name, data):
    data = onnx_model.read_bytes()[: onnx_model.stat().st_size // 2] if data == "half" else data
    broken = _broken_copy(onnx_model, name, data)
    with pytest.raises(DocembError, match=f"{name}: onnxruntime cannot load it: ."):
        load_model(broken)


@pytest.mark.parametrize("name", ["truncated.tflite", "random.tflite"])
def test_a_tflite_file_litert_cannot_load_is_named(small_model, tmp_path, name):
    pytest.importorskip("litert_torch", reason="TFLite tools not installed")
    from docemb.export.tflite_export import export_tflite

    good = export_tflite(small_model, tmp_path / "good.tflite", "float32", "NHWC", False)
    write_contract(good, small_model.preprocessing, describe_model(good), {"checkpoint": None})
    data = good.read_bytes()[: good.stat().st_size // 2] if name.startswith("truncated") else np.random.default_rng(0).bytes(5000)
    with pytest.raises(DocembError, match=f"{name}: not a loadable TFLite model"):
        load_model(_broken_copy(good, name, data))


def _edit_contract(model, edit) -> None:
    path = contract_path(model)
    contract = json.loads(path.read_text())
    path.write_text(edit(contract) if callable(edit) else edit)


@pytest.mark.parametrize(
    "edit, problem",
    [
        ('{"format_version": 1, "sha256": ', "not valid JSON"),
        ("[1, 2]", "not a contract \\(a JSON object was expected, found list\\)"),
        (lambda c: json.dumps({k: v for k, v in c.items() if k != "preprocessing"}), "missing preprocessing"),
        (lambda c: json.dumps({**c, "input": {"name": "x"}}), "missing input.shape, input.dtype"),
        (
            lambda c: json.dumps({**c, "format_version": FORMAT_VERSION + 1}),
            f"contract format {FORMAT_VERSION + 1} is newer than this docemb reads",
        ),
    ],
)
def test_a_broken_contract_is_named_with_what_is_wrong(onnx_model, edit, problem):
    _edit_contract(onnx_model, edit)
    with pytest.raises(DocembError, match=f"good.onnx.contract.json: {problem}"):
        load_model(onnx_model)


def test_the_command_line_says_it_in_one_line_and_the_traceback_only_with_debug(onnx_model, tmp_path, capsys):
    broken = _broken_copy(onnx_model, "truncated.onnx", onnx_model.read_bytes()[:100])
    command = ["index", str(tmp_path), "--model", str(broken), "--out", str(tmp_path / "index")]
    for debug in (False, True):
        with pytest.raises(SystemExit) as exit_:
            main(["--debug", *command] if debug else command)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("docemb index: error:")]
        assert len(lines) == 1 and "truncated.onnx: onnxruntime cannot load it" in lines[0]
        assert ("Traceback" in err) is debug
