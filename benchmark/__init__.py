"""docemb.benchmark: what each exported model costs in accuracy and gains in size and speed."""
