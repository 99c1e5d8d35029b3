# `make test` and `make demo` do all the set-up on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo bench faults lint docs gearmand chromium postgresql-server clean

$(BIN)/tox: pyproject.toml
	@if ! $(PYTHON) -c "import ensurepip, venv" 2>/dev/null; then \
		echo "Installing python3-venv with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q python3-venv; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet tox -e '.[test]'
	touch $@

gearmand:
	@if ! command -v gearmand >/dev/null && [ ! -x /usr/sbin/gearmand ]; then \
		echo "Installing gearmand (gearman-job-server, gearman-tools) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q gearman-job-server gearman-tools; \
	fi

# The browser tests drive Debian's chromium through Playwright; never `playwright install`.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "Installing chromium (for the browser tests) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; \
	fi

## Every check: ruff, mypy, makemigrations --check, the suite on Django 5.2 and 6
## with SQLite and PostgreSQL, and the Sphinx docs with warnings as errors.
test: gearmand chromium $(BIN)/tox
	$(BIN)/python tests/matrix.py $(ARGS)

## The example project: gearmand, two workers and the web server. Ctrl-C stops all.
demo: gearmand $(BIN)/tox
	$(BIN)/python example_project/rundemo.py

## Benchmark: raw gearmand floor versus end-to-end jobs/s on SQLite and PostgreSQL;
## `make bench ARGS=--fanout` measures websocket fan-out instead.
bench: gearmand $(BIN)/tox
	$(BIN)/python -m django_gearattach.bench $(ARGS)

# The fault suite runs a private PostgreSQL cluster with the Debian server binaries.
postgresql-server:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server binaries (postgresql) with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql; \
	fi

## The fault suite on simulated hosts (network namespaces: run as root, about 5 minutes).
## Not part of `make test`. `make faults ARGS=--scale=0.25` runs a quarter of the jobs.
faults: gearmand postgresql-server $(BIN)/tox
	$(SUDO) $(BIN)/python -m tests.faults.run $(ARGS)

clean:
	rm -rf $(VENV) .tox docs/_build
