# Set-up and everyday commands. Everything installs into .venv (created on first use).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=
EXAMPLE ?= data/example_stereo.wav

.PHONY: install run test test-fast bench examples clean

# The project (editable) with its test, ray and formats extras. Re-runs when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,ray,formats]"
	$(PY) -m compileall -q conv_pipeline scripts > /dev/null  # bytecode once: an editable install (and PYTHONDONTWRITEBYTECODE) would compile it on every run
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m conv_pipeline input=$(EXAMPLE)

test: $(STAMP)
	$(PY) -m pytest -q

# The quick subset (no real processes, no Ray, no wheel build): under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The bench extra (librosa, lhotse, soxr: the peers scripts/bench_peers.py measures against).
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,ray,bench]"
	touch $(BENCH_STAMP)

# Every section; one section or a smoke run: make bench BENCH_ARGS="peers --quick"
bench: $(BENCH_STAMP)
	$(PY) scripts/benchmark.py $(BENCH_ARGS)

examples: $(STAMP)
	$(PY) scripts/make_examples.py

clean:
	rm -rf feats multirun outputs build dist *.egg-info .pytest_cache .hypothesis
