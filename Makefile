# vdiskio. `make` builds the venv and libvdiskio in the repo; `make demo` runs the main
# job on a generated sample image; `make test` runs every test; `make bench` measures;
# `make fuzz` fuzzes the parsers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
LIB    := vdiskio/libvdiskio.so
SOURCES := $(wildcard shim/*.c shim/*.h shim/*.map shim/*.py) setup.py pyproject.toml

.PHONY: all build deps demo test bench fuzz clean

all: build

deps:
	@.ci/install-deps

$(PY): | deps
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade "setuptools>=64" wheel "cffi>=1.16" "isal>=1.0" construct pytest
	touch $@

$(LIB): $(STAMP) $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(LIB)

# The Python stage never writes bytecode itself (it runs inside other programs): keep
# the .pyc files current here, or every first open would compile the package again.
build: $(LIB)
	$(PY) -m compileall -q vdiskio vdpartx

demo: build
	sh tests/demo.sh

test: build
	$(PY) -m pytest -q

bench: build
	$(PY) bench/run.py

# Coverage-guided fuzzing (atheris, installed for this target only): every target of
# tests/fuzz for FUZZ_SECONDS each; see FUZZING.md.
FUZZ_SECONDS ?= 60
FUZZ_DIR ?= /tmp/vdiskio-fuzz
fuzz: build
	$(PY) -m pip install --quiet atheris
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_DIR=$(FUZZ_DIR) $(PY) tests/fuzz/run.py

clean:
	rm -rf build $(VENV) *.egg-info vdiskio/*.so demo
	find . -name __pycache__ -prune -exec rm -rf {} +
