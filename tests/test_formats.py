"""The table of formats, the quantization record and stage options read from YAML and flags."""

import argparse
import subprocess
import sys

import pytest

from docemb.errors import DocembError
from docemb.formats import FORMATS, includes, lookup
from docemb.options import add_dataclass_arguments, resolved_values, to_yaml
from docemb.quantization import Calibration, FineTune, QuantizationRecord
from docemb.quantize.run import QuantizeOptions


def test_every_format_has_its_own_file_name_and_is_found_by_its_include_word():
    names = [f.file_name("model") for f in FORMATS]
    assert len(set(names)) == len(names)
    for fmt in FORMATS:
        assert lookup(fmt.stage, fmt.suffix, fmt.include) is fmt
        assert fmt.path("out", "peer_x").name == f"peer_x{fmt.tag}{fmt.suffix}"
    assert includes("quantize", ".onnx") == ["dynamic", "static"]
    assert includes("quantize", ".tflite") == ["dynamic", "static", "full"]
    with pytest.raises(DocembError, match="no .onnx format for `full`"):
        lookup("quantize", ".onnx", "full")


def test_the_formats_command_lists_the_files_make_benchmarks():
    listed = subprocess.run(
        [sys.executable, "-m", "docemb", "formats", "--files", "--dir", "m"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed == [f"m/{f.file_name()}" for f in FORMATS]


def test_a_record_survives_the_contract_and_older_contracts_get_their_graph_kind():
    record = QuantizationRecord(
        "litert-static",
        "litert-torch PT2E static int8",
        "int8 symmetric per-channel",
        "int8 per-tensor",
        drift={"cos_mean": 0.999, "cos_min": 0.99},
        calibration=Calibration("histogram", 3, ["a"]),
        qat=FineTune(3, 1e-3, 32, 8, "loss", {"cos_mean": 0.9, "cos_min": 0.8}, {"cos_mean": 0.99, "cos_min": 0.9}, True),
    )
    as_json = record.to_dict()
    assert "float_nodes" not in as_json and as_json["calibration"]["images"] == 3
    assert QuantizationRecord.from_dict(as_json) == record
    older = {"scheme": "onnxruntime static QDQ int8", "weights": "w", "activations": "a"}
    assert QuantizationRecord.from_dict(older).graph == "ort-qdq"
    assert QuantizationRecord.from_dict({**older, "scheme": "PT2E static QDQ int8, fine-tuned"}).graph == "pt2e-qdq"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    add_dataclass_arguments(parser, QuantizeOptions)
    return parser.parse_args(argv)


def test_options_come_from_yaml_with_flags_winning_and_unknown_keys_refused(tmp_path):
    saved = QuantizeOptions(model="m.onnx", calib=["c"], qat="never", drift_target=[0.98, 0.9])
    config = tmp_path / "q.yaml"
    config.write_text(to_yaml(saved))
    options = QuantizeOptions(**resolved_values(QuantizeOptions, _parse(["--config", str(config), "--qat", "auto"]), str(config)))
    assert options.qat == "auto" and options.drift_target == [0.98, 0.9] and options.calib == ["c"]
    config.write_text("model: m.onnx\nqat_stepz: 3\n")
    with pytest.raises(DocembError, match="unknown config keys \\['qat_stepz'\\]"):
        resolved_values(QuantizeOptions, _parse([]), str(config))
    with pytest.raises(SystemExit):  # choices come from the field's metadata
        _parse(["--qat", "sometimes"])
    with pytest.raises(DocembError, match="MEAN MIN"):
        QuantizeOptions(model="m.onnx", drift_target=[0.9]).validate()
