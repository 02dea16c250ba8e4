"""One plain-English line per genome value, generated from the number itself.

The source card reads each value for the reader ("attn_ratio 0.18: attention layers,
father strongly dominant"); here the words come from fixed bands, so a reading can
never disagree with its number.
"""

from __future__ import annotations

from ..arch.taxonomy import NUM_BLOCKS
from ..genome import SWITCH_ON, TRANSPLANT_HIGH, TRANSPLANT_LOW

# Upper bounds of the mother's share, with the words for a share below them.
SHARE_BANDS = (
    (TRANSPLANT_LOW, "almost all from the father"),
    (0.35, "mostly from the father"),
    (0.45, "leaning to the father"),
    (0.55, "near balanced"),
    (0.65, "leaning to the mother"),
    (TRANSPLANT_HIGH, "mostly from the mother"),
    (1.01, "almost all from the mother"),
)

SUBJECTS = {
    "global_ratio": "overall mix (norms, towers and other tensors)",
    "attn_ratio": "attention",
    "ffn_ratio": "feed-forward (MLP and experts)",
    "embed_ratio": "embeddings and output head",
}


def share_words(share: float) -> str:
    """'mostly from the father' etc. for a mother's share in [0, 1]."""
    return next(words for bound, words in SHARE_BANDS if share < bound)


def block_layers(block: int, num_layers: int | None) -> str:
    """The decoder layers of adaptive block `block` (block = floor(layer * 6 / L))."""
    if not num_layers:
        return f"block {block} of {NUM_BLOCKS}"
    layers = [i for i in range(num_layers) if i * NUM_BLOCKS // num_layers == block]
    if not layers:
        return f"block {block} (no layers in a {num_layers}-layer model)"
    span = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    return f"{span} of {num_layers}"


def reading(name: str, value: float, num_layers: int | None = None,
            has_base: bool = True, used_scan: bool = True) -> str:
    """The one-line reading of one genome value (without the name and number)."""
    if name in SUBJECTS:
        return f"{SUBJECTS[name]}: {share_words(value)}"
    if name.startswith("block_") and name.endswith("_ratio"):
        block = int(name.split("_")[1])
        return f"{block_layers(block, num_layers)}: {share_words(value)}"
    if name in ("density_a", "density_b"):
        return _density(name, value, has_base)
    if name == "mri_trust":
        if not used_scan:
            return "no effect here: the merge had no scan, so the genome alone set the ratios"
        return (f"final ratio = {value:.0%} scan (MDS) + {1 - value:.0%} genome")
    if name == "merge_method_weight":
        return f"each tensor is {value:.0%} DARE-TIES + {1 - value:.0%} linear interpolation"
    return _v3_reading(name, value, has_base)


def _v3_reading(name: str, value: float, has_base: bool) -> str:
    """The genes of genome rule v3 (genome.py V3_NOTES)."""
    if name in ("scale_a", "scale_b"):
        parent = "father" if name == "scale_a" else "mother"
        if name == "scale_a" and not has_base:
            return "no effect here: without a base model the father is the base (no task vector)"
        return (f"the {parent}'s task vector at weight {value:.2f} where a tensor's ratio is "
                "0.5 (task arithmetic's lambda)")
    if name == "trim_density":
        if value >= 1.0:
            return "no magnitude trim"
        return f"TIES's trim: each task vector keeps its largest {value:.0%} of entries"
    if name == "sign_election":
        return ("TIES's sign election: entries against the elected sign dropped"
                if value >= SWITCH_ON else "off: the task vectors are summed as they are")
    if name == "disjoint_mean":
        return ("the disjoint mean: divided by the weight of the entries kept"
                if value >= SWITCH_ON else "off: a weighted sum")
    return "not a known genome field"


def _density(name: str, value: float, has_base: bool) -> str:
    parent = "father" if name == "density_a" else "mother"
    if name == "density_a" and not has_base:
        return "no effect here: without a base model the father is the base (no task vector)"
    kept = f"DARE keeps {value:.0%} of the {parent}'s task-vector entries"
    if value >= 0.95:
        return f"{kept} (nearly all)"
    if value <= 0.3:
        return f"{kept} (very sparse)"
    return kept


def strongest_pulls(genome: dict[str, float]) -> tuple[tuple[str, float], tuple[str, float]]:
    """The ratio most toward the father and the one most toward the mother."""
    ratios = {k: v for k, v in genome.items() if k.endswith("_ratio")}
    return min(ratios.items(), key=lambda kv: kv[1]), max(ratios.items(), key=lambda kv: kv[1])
