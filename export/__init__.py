"""docemb.export: checkpoints to deployable model files, each with its preprocessing contract."""
