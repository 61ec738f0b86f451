"""docemb.benchmark: what each exported model costs in accuracy and gains in size and speed.

This top-level `benchmark/` folder installs as the package `docemb.benchmark` (pyproject.toml
maps it). `run.py` is `docemb bench`, `quality.py` is `docemb evaluate`; `verification.py` and
`search.py` are the geometric-verification and search benchmarks.
"""
