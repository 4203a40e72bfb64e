# Set-up and everyday commands. Everything installs into .venv (created on first use).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXAMPLE ?= data/example_stereo.wav

.PHONY: install run test test-fast bench examples clean

# The project (editable) with its test and ray extras. Re-runs when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,ray]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m conv_pipeline input=$(EXAMPLE)

test: $(STAMP)
	$(PY) -m pytest -q

# The quick subset (no real processes, no Ray, no wheel build): under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) scripts/benchmark.py

examples: $(STAMP)
	$(PY) scripts/make_examples.py

clean:
	rm -rf feats multirun outputs build dist *.egg-info .pytest_cache .hypothesis
