"""The real-model demo: the prepared mother and the end-to-end run."""
