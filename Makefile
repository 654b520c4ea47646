# edgevit — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-all demo bench clean

install: $(STAMP)

# pip (not uv) on purpose: it takes torch 2.14.1 / torchvision 0.29.1 from this machine's
# disk; requirements.lock pins every transitive package.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,bench,litert,tune]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/edgevit compress --recipe int4_swin.yaml

bench: $(STAMP)
	$(BIN)/python -m edgevit.bench

clean:
	rm -rf $(VENV) out build dist *.egg-info
