"""docemb.export: checkpoints to deployable model files, each with its preprocessing contract.

This top-level `export/` folder installs as the package `docemb.export` (pyproject.toml maps it).
`cli.py` is the command; `onnx_export.py` and `tflite_export.py` write and check the files.
"""
