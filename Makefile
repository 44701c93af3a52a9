# vdiskio. `make` builds the venv and libvdiskio in the repo (the commands are then
# .venv/bin/vdiskio and .venv/bin/vdpartx); `make install` puts them in PREFIX/bin; `make
# demo` runs the main job on a generated sample image; `make test` runs the tests (`make
# check`: a fast subset); `make bench` measures; `make fuzz` fuzzes the parsers. Only `make test` (and .ci/run) installs
# the test tools; building needs .ci/packages-build alone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.deps-installed
LIB    := vdiskio/libvdiskio.so
SOURCES := $(wildcard shim/*.c shim/*.h shim/*.map shim/*.py) setup.py pyproject.toml

.PHONY: all build deps demo test check bench fuzz clean install uninstall

all: build

# Building needs only the build packages (installed as root, named in one line otherwise).
deps:
	@.ci/install-deps build

$(PY): | deps
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade "setuptools>=64" wheel "cffi>=1.16" "isal>=1.0" construct pytest
	touch $@

$(LIB): $(STAMP) $(SOURCES)
	$(PY) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $(LIB)

# The Python stage never writes bytecode itself (it runs inside other programs): keep
# the .pyc files current here, or every first open would compile the package again; and
# the first open's modules in one file per group (vdiskio/_bundle.py: a tenth of a first
# open's instructions; a source edited since is left to importlib).
build: $(LIB)
	$(PY) -m compileall -q vdiskio vdpartx
	$(PY) -I -m vdiskio._bundle >/dev/null
	@echo "built: .venv/bin/vdiskio and .venv/bin/vdpartx (make install puts them on PATH)"

# The demo uses fdisk's tools when installed, and what every Debian has otherwise.
demo: build
	sh tests/demo.sh

# make test: every test but the `slow` ones (under 5 minutes); .ci/run adds those.
TEST_ARGS ?= -m "not slow"
test: build
	@.ci/install-deps test || echo "(tests whose tools are missing are skipped)" >&2
	$(PY) -m pytest -q $(TEST_ARGS)

# make check: the fast subset for development (under a minute): decoders, tables, hostile
# images, the boundary and one pass through the library; `make test` before committing.
CHECK_TESTS := test_startup_imports test_boundary test_vhd test_vmdk_structs test_vhdx_structs \
	test_partitions test_lvm_metadata test_api test_disk_table test_fuzz_targets test_hostile \
	test_trust test_shim_vhd test_os_subset
check: build
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(CHECK_TESTS:%=tests/%.py)

bench: build
	$(PY) bench/run.py

# make install: the vdiskio and vdpartx commands in $(PREFIX)/bin, running from a venv of
# their own in $(PREFIX)/lib/vdiskio (PREFIX: /usr/local for root, ~/.local for others).
# Root installs for every user: with Debian's /usr/bin/python3 unless PYTHON is given (a
# Python under /root, such as pyenv's, is out of other users' reach).
PREFIX ?= $(if $(filter 0,$(shell id -u)),/usr/local,$(HOME)/.local)
INSTALL_VENV = $(PREFIX)/lib/vdiskio
INSTALL_PYTHON ?= $(if $(and $(filter default file,$(origin PYTHON)),$(filter 0,$(shell id -u)),$(wildcard /usr/bin/python3)),/usr/bin/python3,$(PYTHON))
install: | deps
	$(INSTALL_PYTHON) -m venv --clear $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/python -m pip install --quiet --upgrade "setuptools>=64" wheel "cffi>=1.16"
	$(INSTALL_VENV)/bin/python -m pip install --quiet --no-build-isolation .
	$(INSTALL_VENV)/bin/python -I -m vdiskio._bundle >/dev/null
	mkdir -p $(PREFIX)/bin
	ln -sf $(INSTALL_VENV)/bin/vdiskio $(INSTALL_VENV)/bin/vdpartx $(PREFIX)/bin/
	@echo "installed: $(PREFIX)/bin/vdiskio and $(PREFIX)/bin/vdpartx"
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "$(PREFIX)/bin is not on your PATH: add it (export PATH=\"$(PREFIX)/bin:\$$PATH\", in ~/.profile to keep it)";; esac

uninstall:
	rm -rf $(INSTALL_VENV) $(PREFIX)/bin/vdiskio $(PREFIX)/bin/vdpartx

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
