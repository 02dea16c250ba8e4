"""Darwin: diagnostic-guided evolutionary merging of language models."""

__version__ = "0.1.0"
