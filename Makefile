# The newcomer's two commands: `make demo` and `make test`. Each bootstraps .venv on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test lint bench clean

# Small recurrent shapes run 5-20x faster on one BLAS thread (extra threads mostly wait on each
# other); set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS yourself to override.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Tests, lint and benchmarks need the dev tools (pytest, hypothesis, ruff); the demo does not.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# The demo's extras: tqdm and matplotlib (progress bar, plot), and Graphviz's `dot` (a system package) for its
# SVG; without them it still runs and says what it skipped.
$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[cli]' || { $(PY) -m pip install --quiet -e . && \
		echo "make demo: could not install tqdm/matplotlib; no progress bar or plot"; }
	@command -v dot >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && \
		apt-get install -y -qq graphviz >/dev/null 2>&1; } || \
		echo "make demo: Graphviz's dot is not installed (sudo apt-get install graphviz); pictures stay .dot files"
	touch $@

demo: $(DEMO_STAMP)
	$(PY) -m tinygrad_seq demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_rnn.py

clean:
	rm -rf $(VENV) tinygrad_seq_out .pytest_cache .hypothesis
