"""mergekit interop: run a mergekit YAML with darwin's engine, export a genome as one."""

from .config import MergekitConfig, load_config
from .run import merge_from_config

__all__ = ["MergekitConfig", "load_config", "merge_from_config"]
