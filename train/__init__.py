"""docemb.train: margin-loss training through PartialFC, one class per template variant.

This top-level `train/` folder installs as the package `docemb.train` (pyproject.toml maps it).
`loop.py` is the stage (build_run, train_one_epoch, evaluate, finish), `cli.py` its command,
`corpus.py` the training pool builder, `release.py` the shipped weights' writer.
"""
