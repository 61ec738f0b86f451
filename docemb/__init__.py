"""docemb core: the model, the preprocessing contract and image I/O that every stage shares.

The Python API: `docemb.load_model(path).embed(images)` (docemb.api), loaded on first use so
that the command line starts without numpy.
"""

__version__ = "0.1.0"
__all__ = ["load_model", "template_scores"]


def __getattr__(name: str):
    if name == "load_model":
        from docemb.api import load_model

        return load_model
    if name == "template_scores":
        from docemb.evaluation import template_scores

        return template_scores
    raise AttributeError(f"module 'docemb' has no attribute {name!r}")
