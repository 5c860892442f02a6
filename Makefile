# The README's two commands, `make run` and `make test`, and a few more.
# Everything runs from the virtualenv in .venv, created on first use with
# $(PYTHON) (3.11 or newer). Each requirements file is installed again only
# when it changed since the stamp file in .venv was written.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: help run test test-production test-failover failover-lab lint bench bench-deps install install-dev browser-deps diagram-deps diagrams

help:
	@echo "make run     start web, workers (one pool per queue), beat, Flower, SMTP sink, Redis if needed"
	@echo "make test    run the test suite (PYTEST_ARGS=\"...\" passes arguments to pytest)"
	@echo "make test-production  the integration and fault suites on PostgreSQL with RabbitMQ as the broker"
	@echo "make test-failover    the failover suite: Sentinel, quorum queues, PostgreSQL restarts (tests/failover)"
	@echo "make failover-lab     run the failover lab and print its table (LAB_ARGS=\"--runs 3 --seed 7\")"
	@echo "make lint    ruff check and ruff format --check"
	@echo "make bench   run the benchmarks (bench/)"
	@echo "make diagrams  render docs/diagrams/*.dot to SVG with Graphviz (docs/patterns.md shows them)"

run: $(VENV)/.requirements.stamp
	$(BIN)/python -m scripts.run

test: $(VENV)/.requirements-dev.stamp browser-deps diagram-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The production profile: PostgreSQL behind DATABASE_URL, RabbitMQ behind
# CELERY_BROKER_URL, no code change. It uses a database (Django creates and
# drops test_<name>) and a RabbitMQ vhost of its own, and cleans only those.
TEST_PG_URL ?= postgres://postgres@127.0.0.1:5432/eventdemo_ci
TEST_AMQP_VHOST ?= eventdemo_ci
# The fault and scale-out suites run their own redis-server as the broker (they
# stop it, cut it off, read its keys): on this profile the fault suite runs on
# PostgreSQL with that Redis broker, the rest of the integration suite on
# PostgreSQL with RabbitMQ.
test-production: $(VENV)/.requirements-dev.stamp
	scripts/rabbitmq_vhost.sh reset $(TEST_AMQP_VHOST)
	TEST_DATABASE_URL=$(TEST_PG_URL) TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/$(TEST_AMQP_VHOST) \
		$(BIN)/python -m pytest -m 'integration or database' --ignore=tests/faults --ignore=tests/scaleout $(PYTEST_ARGS); \
		status=$$?; scripts/rabbitmq_vhost.sh delete $(TEST_AMQP_VHOST); exit $$status
	TEST_DATABASE_URL=$(TEST_PG_URL) $(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

# The failover suite starts its own Redis primary, replicas and Sentinels, a
# RabbitMQ node and a PostgreSQL cluster, and faults them (tests/failover,
# lab/failover): a CI step of its own, bounded by pytest-timeout per test.
# Then the fault suite again with RabbitMQ quorum queues as the broker (a vhost per
# test on the machine's RabbitMQ, tests/faults/quorum.py).
test-failover: $(VENV)/.requirements-dev.stamp
	EVENTDEMO_FAILOVER=1 TEST_DATABASE_URL=$(TEST_PG_URL) $(BIN)/python -m pytest tests/failover $(PYTEST_ARGS)
	FAULTS_BROKER=quorum EVENTBUS_QUEUE_TYPE=quorum TEST_DATABASE_URL=$(TEST_PG_URL) \
		TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/eventdemo_faults_quorum \
		$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

failover-lab: $(VENV)/.requirements-dev.stamp
	$(BIN)/python -m lab.failover $(LAB_ARGS)

lint: $(VENV)/.requirements-dev.stamp
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.requirements-bench.stamp bench-deps
	$(BIN)/python -m bench.run

# Figure 4's load tool, wrk, from Debian when missing and running as root.
bench-deps:
	@if command -v wrk >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's wrk package for the sign-up load figure"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; \
	else \
		echo "wrk is missing and this is not root: install it (apt-get install -y wrk) for figure 4"; exit 1; \
	fi

# The browser tests (tests/browser) drive Debian's chromium package, never a
# browser Playwright downloads. Installed here when missing and running as root
# (as CI does); otherwise those tests skip and say how to install it (in CI they fail).
browser-deps:
	@if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium package for the browser tests"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "chromium is missing and this is not root: the browser tests will skip (apt-get install -y chromium)"; \
	fi

# The guide's pictures (docs/patterns.md), rendered from their sources with
# Debian's graphviz package, installed here when missing and running as root (as
# CI does; otherwise the diagram check skips and says how to install it, and in
# CI it fails). The SVGs are committed; tests/lab/test_diagrams.py checks them
# against their sources when the same Graphviz version is at hand.
diagram-deps:
	@if command -v dot >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's graphviz package for the diagram check"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y graphviz; \
	else \
		echo "Graphviz is missing and this is not root: the diagram check will skip (apt-get install -y graphviz)"; \
	fi

DIAGRAMS := $(patsubst %.dot,%.svg,$(wildcard docs/diagrams/*.dot))

diagrams: $(DIAGRAMS)

docs/diagrams/%.svg: docs/diagrams/%.dot | diagram-deps
	@command -v dot >/dev/null 2>&1 || { echo "Graphviz is missing: apt-get install -y graphviz"; exit 1; }
	dot -Tsvg $< -o $@

install: $(VENV)/.requirements.stamp

install-dev: $(VENV)/.requirements-dev.stamp

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; $(PYTHON) is " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Order-only on the interpreter: a venv whose timestamp changed needs no reinstall.
$(VENV)/.requirements.stamp: requirements.txt | $(BIN)/python
	$(PIP) -r requirements.txt
	touch $@

# requirements-bench.txt includes requirements-dev.txt (and so requirements.txt).
$(VENV)/.requirements-bench.stamp: requirements-bench.txt requirements-dev.txt requirements.txt | $(BIN)/python
	$(PIP) -r requirements-bench.txt
	touch $@ $(VENV)/.requirements-dev.stamp $(VENV)/.requirements.stamp

# requirements-dev.txt includes requirements.txt, so this install covers both stamps.
$(VENV)/.requirements-dev.stamp: requirements-dev.txt requirements.txt | $(BIN)/python
	$(PIP) -r requirements-dev.txt
	touch $@ $(VENV)/.requirements.stamp
