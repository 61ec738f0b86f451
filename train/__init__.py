"""docemb.train: margin-loss training through PartialFC, one class per template variant."""
