"""Classify every tensor of a model by component, decoder layer and adaptive block.

The rules are data (families.yaml); this module only applies them. The decoder's
L layers are split into 6 contiguous "adaptive" blocks, `block = floor(layer*6/L)`,
so a genome means the same thing on a 30-layer and a 4-layer model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..io.dtypes import FLOAT_CODES
from .model_config import declared_size
from .rules import COMPONENTS, MergeMode, family_for

__all__ = ["COMPONENTS", "NUM_BLOCKS", "Taxonomy", "TensorInfo", "block_of", "num_layers_of"]

NUM_BLOCKS = 6


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor sits in the model and how the merge treats it."""

    name: str
    component: str
    layer: int | None  # decoder layer index; None outside the decoder layers
    block: int | None  # adaptive block 0..5; None outside the decoder layers
    merge_kind: str  # dare_ties, linear, clip_min, clip_max, exact

    def to_dict(self) -> dict:
        return asdict(self)


def block_of(layer: int, num_layers: int) -> int:
    """The adaptive block (0..5) of a decoder layer."""
    return min(NUM_BLOCKS - 1, layer * NUM_BLOCKS // num_layers)


def num_layers_of(config: dict) -> int | None:
    """Decoder layer count from a config (top level or the text sub-config)."""
    return declared_size(config, "num_hidden_layers", "n_layer", "num_layers")


def _model_type(config: dict) -> str:
    return str(config.get("model_type") or "")


class Taxonomy:
    """The rules for one model, chosen from its config's model_type."""

    def __init__(self, config: dict):
        self.model_type = _model_type(config)
        self._rules = family_for(self.model_type)
        self.family = self._rules.name
        self.num_layers = num_layers_of(config)

    def component_of(self, name: str) -> str:
        return self._rules.component_of(name, self.model_type)

    def layer_of(self, name: str, component: str) -> int | None:
        if component in ("vision", "audio"):
            return None
        match = self._rules.decoder_layer.search(name)
        return int(match.group(1)) if match else None

    def merge_kind_of(self, name: str, shape: tuple[int, ...], dtype: str) -> MergeMode:
        if dtype not in FLOAT_CODES:
            return MergeMode.EXACT
        kind = next((k for rx, k in self._rules.merge_kinds if rx.search(name)), None)
        if kind:
            return MergeMode(kind)
        return MergeMode.DARE_TIES if len(shape) >= 2 else MergeMode.LINEAR

    def classify(self, name: str, shape: tuple[int, ...] = (), dtype: str = "F32") -> TensorInfo:
        component = self.component_of(name)
        layer = self.layer_of(name, component)
        if layer is not None and self.num_layers:
            block = block_of(min(layer, self.num_layers - 1), self.num_layers)
        else:
            block = None
        return TensorInfo(name, component, layer, block, self.merge_kind_of(name, shape, dtype))

    def classify_all(self, specs) -> list[TensorInfo]:
        """Classify TensorSpecs (anything with name, shape, dtype), in their order."""
        return [self.classify(s.name, tuple(s.shape), s.dtype) for s in specs]
