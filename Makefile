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

# two workers, one test file each (module fixtures are built once): most of a test is
# single-threaded Python, export and compile, so the second core halves the wall time
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP)
	$(BIN)/edgevit compress --recipe int4_swin.yaml

bench: $(STAMP)
	$(BIN)/python -m edgevit.bench

clean:
	rm -rf $(VENV) out build dist *.egg-info
