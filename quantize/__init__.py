"""docemb.quantize: int8 quantization calibrated on real images, with a drift target.

This top-level `quantize/` folder installs as the package `docemb.quantize` (pyproject.toml maps
it). `run.py` is the stage (QuantizeOptions in, QuantizedFile records out; `run_tflite.py` for
.tflite), `cli.py` its command; `ort.py` onnxruntime int8, `pt2e.py` the PT2E int8 graph written
as TFLite (`tflite.py`) or QDQ ONNX (`pt2e_onnx.py`), `qat.py` the fine-tune.
"""
