# The README's two commands, `make run` and `make test`, and a few more.
# Everything runs from the virtualenv in .venv, created on first use with
# $(PYTHON) (3.11 or newer). Each requirements file is installed again only
# when it changed since the stamp file in .venv was written.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: help run test lint bench install install-dev

help:
	@echo "make run     start web, workers (one pool per queue), beat, Flower, SMTP sink, Redis if needed"
	@echo "make test    run the test suite (PYTEST_ARGS=\"...\" passes arguments to pytest)"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make bench   run the benchmarks (bench/)"

run: $(VENV)/.requirements.stamp
	$(BIN)/python -m scripts.run

test: $(VENV)/.requirements-dev.stamp
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.requirements-dev.stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.requirements-dev.stamp
	$(BIN)/python -m bench.run

install: $(VENV)/.requirements.stamp

install-dev: $(VENV)/.requirements-dev.stamp

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: a venv whose timestamp changed needs no reinstall.
$(VENV)/.requirements.stamp: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

# requirements-dev.txt includes requirements.txt, so this install covers both stamps.
$(VENV)/.requirements-dev.stamp: requirements-dev.txt requirements.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	touch $@ $(VENV)/.requirements.stamp
