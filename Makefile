# msat-lava developer entry points.
#   make venv   create/update the virtual environment (fast no-op when up to date)
#   make test   run the test suite
#   make demo   run the demo (currently `msat-lava doctor`)
# VENV is overridable, e.g. `make test VENV=/tmp/coldvenv` to exercise a cold install.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PIP_INSTALL := $(PIP) install --disable-pip-version-check --no-input -q
# pip 23.2 warns once per project that the file:// extra indexes in the machine's pip config
# lack it ("WARNING: Location 'file:///...' is ignored"). Drop only those lines; everything
# else, errors included, still shows, and pip's exit status is kept (pipefail).
PIP_FILTER := 2>&1 | { grep -v "^WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$$" || true; }
pip_install = @echo "+ pip install $(1)"; $(PIP_INSTALL) $(1) $(PIP_FILTER)
PYTEST_ARGS ?=

# The stamp's name carries a hash of everything that decides the environment's contents,
# so editing constraints.txt or pyproject.toml (not merely touching them) reinstalls.
ENV_HASH := $(shell cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.msat-lava-env-$(ENV_HASH)

# Requirement lists are read from pyproject.toml so they are written down only once.
read_reqs = $(PY) -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	print("\n".join(p["dependencies"] if sys.argv[1] == "-" else p["optional-dependencies"][sys.argv[1]]))'

.PHONY: venv test demo clean-venv-stamp

venv: $(STAMP)

$(STAMP):
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing into $(VENV) (constraints.txt, pyproject.toml changed or first run)"
	@# 1. the local CPU torch first: never let pip resolve an unpinned torch (it would pick a CUDA build)
	$(call pip_install,-c constraints.txt setuptools torch==2.13.0)
	@# 2. runtime + test dependencies, exact versions from constraints.txt
	@$(read_reqs) - > $(VENV)/msat-lava-requirements.txt
	@$(read_reqs) test >> $(VENV)/msat-lava-requirements.txt
	$(call pip_install,-c constraints.txt -r $(VENV)/msat-lava-requirements.txt)
	@# 3. lava-nc/lava-dl declare python<3.11 and stale pins: no deps, ignore requires-python
	@$(read_reqs) lava > $(VENV)/msat-lava-requirements-lava.txt
	$(call pip_install,--no-deps --ignore-requires-python -c constraints.txt -r $(VENV)/msat-lava-requirements-lava.txt)
	@# 4. this project, editable, with nothing else
	$(call pip_install,--no-deps --no-build-isolation -e .)
	@rm -f $(VENV)/.msat-lava-env-*
	@touch $@

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/msat-lava demo

# Forces the next `make venv` to re-run the install steps (without deleting the venv).
clean-venv-stamp:
	rm -f $(VENV)/.msat-lava-env-*
