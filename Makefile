# vdiskio. `make` builds the venv and libvdiskio in the repo; `make demo` runs the main
# job on a generated sample image; `make test` runs every test; `make bench` measures.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
LIB    := vdiskio/libvdiskio.so
SOURCES := $(wildcard shim/*.c shim/*.h shim/*.map shim/*.py) setup.py pyproject.toml

.PHONY: all build deps demo test bench clean

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

# make test: every test but the `slow` ones (under 5 minutes); .ci/run adds those.
TEST_ARGS ?= -m "not slow"
test: build
	$(PY) -m pytest -q $(TEST_ARGS)

bench: build
	$(PY) bench/run.py

clean:
	rm -rf build $(VENV) *.egg-info vdiskio/*.so demo
	find . -name __pycache__ -prune -exec rm -rf {} +
