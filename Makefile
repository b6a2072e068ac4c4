# Developer commands. Every target creates the virtualenv on first use.
#   make demo   - a real service freezes; the dump pins the line
#   make test   - the test suite
#   make lint   - ruff + mypy
#   make bench  - overhead, idle cost, detection latency, capture cost
#   make dist   - sdist and wheel in dist/, checked by twine
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench dist venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint,aiohttp]'
	touch $@

demo: venv
	$(PY) scripts/list_users_hang.py

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check freezewatch tests scripts
	$(PY) -m mypy

bench: venv
	$(PY) scripts/bench.py $(BENCH_ARGS)

dist: venv
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m twine check --strict dist/*

clean:
	rm -rf $(VENV) .venv-* freezewatch-dumps build dist *.egg-info
