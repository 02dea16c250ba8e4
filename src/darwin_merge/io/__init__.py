"""Reading, writing and importing model folders: all of the project's byte I/O.

The names below load their module (and torch) on first use, so a torch-free module of the
package (dtypes, files) can be imported without it.
"""

import importlib

_HOMES = {"ModelSource": "reader", "TensorSpec": "reader", "load_config": "reader",
          "ModelWriter": "writer", "atomic_output_dir": "writer"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
