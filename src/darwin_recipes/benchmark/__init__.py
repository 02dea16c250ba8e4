"""The merge-quality benchmark: merge problems as data, each searched with several seeds and
scored with the tuned standard recipes on test items nobody has looked at (docs/BENCHMARKS.md,
"Merge quality")."""

from darwin_merge.progress import narrator

say = narrator("bench")  # the benchmark's one-line messages on stderr
