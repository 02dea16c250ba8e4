"""What a resumed run must agree on with the files it finds in RUN_DIR.

Three things are kept for a re-run: the study (every scored candidate), the scan in
RUN_DIR/scan and phase1.json. The scan carries its own inputs hash (scan.json's
`inputs_sha256`, docs/SCAN.md); the other two carry the identity of what made them: the
parents' fingerprints (config, headers and data samples, docs/RELIABILITY.md), the recipe's
fields that its content depends on, and the settings that change scores (dtype,
device, batch size, the items scored, the probe settings). A scan or Phase 1 made for
something else is recomputed; a study made for something else is refused
(`StorageError`): its scores cannot be mixed with new ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..io.fingerprint import parents_fingerprint
from .recipe import Recipe


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def search_identity(recipe: Recipe) -> dict:
    """What every score in the study depends on (a study must match it to continue)."""
    scan = ({"scan_sha256": _file_sha256(recipe.scan)} if recipe.scan is not None
            else {"probe_max_tokens": recipe.probe_max_tokens,
                  "probe_max_prompts": recipe.probe_max_prompts, "mri": recipe.mri,
                  "scan_items": recipe.scan_items})
    return {**recipe.identity(), **scan,
            "parents_sha256": parents_fingerprint(recipe.father, recipe.mother, recipe.base),
            "device": recipe.device, "dtype": recipe.dtype, "batch_size": recipe.batch_size}


def phase1_identity(recipe: Recipe) -> dict:
    """What phase1.json depends on: the search's identity and Phase 1's own settings."""
    return {**search_identity(recipe), "phase1_steps": recipe.phase1_steps,
            "top_k": recipe.top_k, "seed": recipe.seed}


def differences(recorded: dict | None, current: dict) -> list[str]:
    """Names of the fields that differ (every field when nothing was recorded).

    Both sides go through JSON first, so a tuple and the list it was stored as agree."""
    if not isinstance(recorded, dict):
        return sorted(current)
    recorded = json.loads(json.dumps(recorded, default=str))
    current = json.loads(json.dumps(current, default=str))
    return sorted(k for k in current.keys() | recorded.keys()
                  if current.get(k) != recorded.get(k))
