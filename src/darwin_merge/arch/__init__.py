"""Tensor taxonomy per architecture family (rules as data in families.yaml)."""

from .taxonomy import COMPONENTS, NUM_BLOCKS, Taxonomy, TensorInfo, block_of, num_layers_of

__all__ = ["COMPONENTS", "NUM_BLOCKS", "Taxonomy", "TensorInfo", "block_of", "num_layers_of"]
