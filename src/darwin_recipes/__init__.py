"""Recipes beside the library (as torchtune keeps `recipes/` beside `torchtune/`): the demo's
fine-tunes, pairs and budgets (`demo/`) and the merge-quality benchmark with its problems as
data (`benchmark/`). They use `darwin_merge`; the library never imports them (a layout
test): only the CLI's `darwin demo ...` and `darwin bench ...` commands do, when run."""
