"""Reading, writing and importing model folders."""

from .reader import ModelSource, TensorSpec, load_config
from .writer import ModelWriter, atomic_output_dir

__all__ = ["ModelSource", "TensorSpec", "load_config", "ModelWriter", "atomic_output_dir"]
