# Avatario backend. The two commands a newcomer needs:
#   make run    - the whole stack locally (SQLite, a small demo model) and a demo through it
#   make test   - lint and the whole test suite
# Everything installs itself into .venv (Python >= 3.11), node_modules and .tools.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(shell find protos -name '*.proto')
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup protos tools lint test test-fast run bench migrate clean

setup: $(VENV)/.installed gen/.stamp

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so the inference extra installs nothing bigger.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q "grpcio-tools>=1.85,<2"
	$(PY) scripts/gen_protos.py
	$(PY) -m pip install -q -e ".[inference,dev]"
	touch $@

gen/.stamp: $(PROTOS) scripts/gen_protos.py $(VENV)/.installed
	$(PY) scripts/gen_protos.py
	touch $@

protos: $(VENV)/.installed
	$(PY) scripts/gen_protos.py
	touch gen/.stamp

tools:
	bash scripts/install_tools.sh

lint: setup tools
	cd protos && buf lint
	$(PY) -m ruff check services avatario_tools tests bench scripts

test: setup tools lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

run: setup
	$(PY) -m avatario_tools.devstack $(RUN_ARGS)

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf gen var .pytest_cache
