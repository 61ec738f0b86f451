"""docemb core: the model, the preprocessing contract and image I/O that every stage shares."""

__version__ = "0.1.0"
