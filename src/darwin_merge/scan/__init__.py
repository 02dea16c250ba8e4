"""Model Diagnostic Scan: static tensor profiles, probe-based layer importance, MRI ratios."""

from .layers import (
                     DecoderTrace,
                     decoder_of,
                     layer_skip_distances,
                     skip_hidden,
                     skip_hidden_naive,
                     token_cosine_distance,
                     trace_decoder,
)
from .probes import load_probes, probes_sha256
from .ratios import combined_score, mri_ratio
from .run import load_scan, run_scan, summary_lines
from .static import static_score, tensor_stats

__all__ = [
    "DecoderTrace", "decoder_of", "layer_skip_distances", "skip_hidden", "skip_hidden_naive",
    "token_cosine_distance", "trace_decoder", "load_probes", "probes_sha256", "combined_score",
    "mri_ratio", "load_scan", "run_scan", "summary_lines", "static_score",
    "tensor_stats",
]
